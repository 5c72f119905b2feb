//! CustomFieldService.

use super::{Gateway, Wire};
use crate::convert::{hidden, name, ts};
use crm_api::v1 as pb;
use crm_api::v1::custom_field_service_server::CustomFieldService;
use crm_core::error::Result;
use crm_core::model;
use crm_core::resource::Record;
use pb::ListCustomFieldDefinitionsResponse;

pub struct CustomFields(pub Gateway);

fn type_in(t: i32) -> String {
    match pb::CustomFieldType::try_from(t) {
        Ok(pb::CustomFieldType::Text) => "TEXT",
        Ok(pb::CustomFieldType::Number) => "NUMBER",
        Ok(pb::CustomFieldType::Date) => "DATE",
        Ok(pb::CustomFieldType::Enum) => "ENUM",
        _ => "",
    }
    .to_owned()
}

fn type_out(t: &str) -> i32 {
    (match t {
        "TEXT" => pb::CustomFieldType::Text,
        "NUMBER" => pb::CustomFieldType::Number,
        "DATE" => pb::CustomFieldType::Date,
        "ENUM" => pb::CustomFieldType::Enum,
        _ => pb::CustomFieldType::Unspecified,
    }) as i32
}

impl Wire<model::CustomFieldDefinition> for pb::CustomFieldDefinition {
    const FIELD: &'static str = "custom_field_definition";

    fn into_domain(self) -> Result<model::CustomFieldDefinition> {
        Ok(model::CustomFieldDefinition {
            collection: self.collection.trim().to_owned(),
            key: self.key.trim().to_owned(),
            display_name: self.display_name,
            value_type: type_in(self.r#type),
            enum_values: self.enum_values,
            required: self.required,
        })
    }

    fn from_record(r: Record<model::CustomFieldDefinition>) -> Self {
        let d = r.data;
        pb::CustomFieldDefinition {
            name: name("customFieldDefinitions", Some(r.meta.id)),
            collection: d.collection,
            key: d.key,
            display_name: d.display_name,
            r#type: type_out(&d.value_type),
            enum_values: d.enum_values,
            required: d.required,
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

crate::service_impl!(CustomFieldService, CustomFields, [
    model::CustomFieldDefinition => pb::CustomFieldDefinition {
        create_custom_field_definition(pb::CreateCustomFieldDefinitionRequest, custom_field_definition),
        get_custom_field_definition(pb::GetCustomFieldDefinitionRequest),
        list_custom_field_definitions(pb::ListCustomFieldDefinitionsRequest => ListCustomFieldDefinitionsResponse . custom_field_definitions),
        update_custom_field_definition(pb::UpdateCustomFieldDefinitionRequest),
        delete_custom_field_definition(pb::DeleteCustomFieldDefinitionRequest)
    }
]);
