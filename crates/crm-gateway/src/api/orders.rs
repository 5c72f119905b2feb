//! OrderService.

use super::{Gateway, Wire};
use crate::convert::{from_money, from_ts, hidden, money, name, opt_ts, reference, ts};
use crm_api::v1 as pb;
use crm_api::v1::order_service_server::OrderService;
use crm_core::error::Result;
use crm_core::model;
use crm_core::resource::Record;
use pb::ListOrdersResponse;

pub struct Orders(pub Gateway);

// The one wire mapping of each order enum.

fn channel_in(c: i32) -> Result<model::SalesChannel> {
    use model::SalesChannel as C;
    Ok(match pb::SalesChannel::try_from(c) {
        Ok(pb::SalesChannel::Unspecified) => C::Unspecified,
        Ok(pb::SalesChannel::Direct) => C::Direct,
        Ok(pb::SalesChannel::Online) => C::Online,
        Ok(pb::SalesChannel::Retail) => C::Retail,
        Ok(pb::SalesChannel::Partner) => C::Partner,
        Ok(pb::SalesChannel::Phone) => C::Phone,
        Err(_) => return Err(crate::convert::unknown_enum("channel", c)),
    })
}

fn channel_out(c: model::SalesChannel) -> i32 {
    use model::SalesChannel as C;
    (match c {
        C::Unspecified => pb::SalesChannel::Unspecified,
        C::Direct => pb::SalesChannel::Direct,
        C::Online => pb::SalesChannel::Online,
        C::Retail => pb::SalesChannel::Retail,
        C::Partner => pb::SalesChannel::Partner,
        C::Phone => pb::SalesChannel::Phone,
    }) as i32
}

/// UNSPECIFIED means the default, OPEN.
fn status_in(s: i32) -> Result<model::OrderStatus> {
    use model::OrderStatus as S;
    Ok(match pb::OrderStatus::try_from(s) {
        Ok(pb::OrderStatus::Unspecified | pb::OrderStatus::Open) => S::Open,
        Ok(pb::OrderStatus::Fulfilled) => S::Fulfilled,
        Ok(pb::OrderStatus::Cancelled) => S::Cancelled,
        Ok(pb::OrderStatus::Returned) => S::Returned,
        Err(_) => return Err(crate::convert::unknown_enum("status", s)),
    })
}

fn status_out(s: model::OrderStatus) -> i32 {
    use model::OrderStatus as S;
    (match s {
        S::Open => pb::OrderStatus::Open,
        S::Fulfilled => pb::OrderStatus::Fulfilled,
        S::Cancelled => pb::OrderStatus::Cancelled,
        S::Returned => pb::OrderStatus::Returned,
    }) as i32
}

impl Wire<model::Order> for pb::Order {
    const FIELD: &'static str = "order";

    fn into_domain(self) -> Result<model::Order> {
        let code = self.currency_code.trim().to_ascii_uppercase();
        let order_code = (!code.is_empty()).then_some(code.as_str());
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, l) in self.lines.into_iter().enumerate() {
            let f = |n: &str| format!("lines[{i}].{n}");
            let minor = |n: &str, m: &Option<crm_api::google::r#type::Money>| match m {
                Some(m) => from_money(&f(n), m, order_code),
                None => Ok(0),
            };
            lines.push(model::OrderLine {
                product: reference(&f("product"), "products", &l.product)?,
                quantity: l.quantity,
                unit_price: minor("unit_price", &l.unit_price)?,
                discount: minor("discount", &l.discount)?,
                amount: 0,
            });
        }
        Ok(model::Order {
            account: reference("account", "accounts", &self.account)?,
            contact: reference("contact", "contacts", &self.contact)?,
            order_time: from_ts("order_time", self.order_time)?,
            channel: channel_in(self.channel)?,
            status: status_in(self.status)?,
            currency_code: code,
            lines,
            total: 0,
            owner: reference("owner", "users", &self.owner)?,
            territory: reference("territory", "territories", &self.territory)?,
        })
    }

    fn from_record(r: Record<model::Order>) -> Self {
        let d = r.data;
        let code = d.currency_code.clone();
        pb::Order {
            name: name("orders", Some(r.meta.id)),
            account: name("accounts", d.account),
            contact: name("contacts", d.contact),
            order_time: opt_ts(d.order_time),
            channel: channel_out(d.channel),
            status: status_out(d.status),
            lines: d
                .lines
                .into_iter()
                .map(|l| pb::OrderLine {
                    product: name("products", l.product),
                    quantity: l.quantity,
                    unit_price: Some(money(&code, l.unit_price)),
                    discount: Some(money(&code, l.discount)),
                    amount: Some(money(&code, l.amount)),
                })
                .collect(),
            total: Some(money(&code, d.total)),
            currency_code: d.currency_code,
            owner: name("users", d.owner),
            territory: name("territories", d.territory),
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

crate::service_impl!(OrderService, Orders, [
    model::Order => pb::Order {
        create_order(pb::CreateOrderRequest, order),
        get_order(pb::GetOrderRequest),
        list_orders(pb::ListOrdersRequest => ListOrdersResponse . orders),
        update_order(pb::UpdateOrderRequest),
        delete_order(pb::DeleteOrderRequest)
    }
]);
