//! ProductService: products and product groups.

use super::{Gateway, Wire};
use crate::convert::{from_money, hidden, money, name, reference, ts};
use crm_api::v1 as pb;
use crm_api::v1::product_service_server::ProductService;
use crm_core::error::Result;
use crm_core::model;
use crm_core::resource::Record;
use pb::{ListProductGroupsResponse, ListProductsResponse};

pub struct Products(pub Gateway);

impl Wire<model::Product> for pb::Product {
    const FIELD: &'static str = "product";

    fn into_domain(self) -> Result<model::Product> {
        let (currency_code, list_price) = match &self.list_price {
            Some(m) if !m.currency_code.is_empty() || m.units != 0 || m.nanos != 0 => {
                (m.currency_code.clone(), from_money("list_price", m, None)?)
            }
            _ => (String::new(), 0),
        };
        Ok(model::Product {
            sku: self.sku,
            display_name: self.display_name,
            product_group: reference("product_group", "productGroups", &self.product_group)?,
            currency_code,
            list_price,
            active: self.active,
        })
    }

    fn from_record(r: Record<model::Product>) -> Self {
        let d = r.data;
        pb::Product {
            name: name("products", Some(r.meta.id)),
            sku: d.sku,
            display_name: d.display_name,
            product_group: name("productGroups", d.product_group),
            list_price: (!d.currency_code.is_empty())
                .then(|| money(&d.currency_code, d.list_price)),
            active: d.active,
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

impl Wire<model::ProductGroup> for pb::ProductGroup {
    const FIELD: &'static str = "product_group";

    fn into_domain(self) -> Result<model::ProductGroup> {
        Ok(model::ProductGroup {
            display_name: self.display_name,
            parent: reference("parent", "productGroups", &self.parent)?,
        })
    }

    fn from_record(r: Record<model::ProductGroup>) -> Self {
        let d = r.data;
        pb::ProductGroup {
            name: name("productGroups", Some(r.meta.id)),
            display_name: d.display_name,
            parent: name("productGroups", d.parent),
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
            hidden_fields: hidden(&r.hidden),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

crate::service_impl!(ProductService, Products, [
    model::Product => pb::Product {
        create_product(pb::CreateProductRequest, product),
        get_product(pb::GetProductRequest),
        list_products(pb::ListProductsRequest => ListProductsResponse . products),
        update_product(pb::UpdateProductRequest),
        delete_product(pb::DeleteProductRequest)
    },
    model::ProductGroup => pb::ProductGroup {
        create_product_group(pb::CreateProductGroupRequest, product_group),
        get_product_group(pb::GetProductGroupRequest),
        list_product_groups(pb::ListProductGroupsRequest => ListProductGroupsResponse . product_groups),
        update_product_group(pb::UpdateProductGroupRequest),
        delete_product_group(pb::DeleteProductGroupRequest)
    }
]);
