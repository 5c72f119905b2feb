//! AccessService: roles (named `roles/{key}`) and the caller's evaluated access.

use crate::convert::{self, hidden, ts};
use crate::status::OrStatus;
use crm_api::v1 as pb;
use crm_api::v1::access_service_server::AccessService;
use crm_core::access::{Action, FieldAccess, FieldRule, Grant, Scope};
use crm_core::error::{Error, Result};
use crm_core::model::{self, role};
use crm_core::resource::Record;
use crm_core::service::Ctx;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::Gateway;

pub struct Access(pub Gateway);

fn scope_in(s: i32) -> Result<Scope> {
    Ok(match pb::Scope::try_from(s) {
        Ok(pb::Scope::Own) => Scope::Own,
        Ok(pb::Scope::Team) => Scope::Team,
        Ok(pb::Scope::Subtree) => Scope::Subtree,
        Ok(pb::Scope::Territory) => Scope::Territory,
        Ok(pb::Scope::All) => Scope::All,
        _ => {
            return Err(Error::invalid(
                "scope",
                "must be OWN, TEAM, SUBTREE, TERRITORY or ALL",
            ));
        }
    })
}

fn scope_out(s: Scope) -> i32 {
    (match s {
        Scope::Own => pb::Scope::Own,
        Scope::Team => pb::Scope::Team,
        Scope::Subtree => pb::Scope::Subtree,
        Scope::Territory => pb::Scope::Territory,
        Scope::All => pb::Scope::All,
    }) as i32
}

fn action_in(field: &str, a: i32) -> Result<Action> {
    Ok(match pb::Action::try_from(a) {
        Ok(pb::Action::Read) => Action::Read,
        Ok(pb::Action::Create) => Action::Create,
        Ok(pb::Action::Update) => Action::Update,
        Ok(pb::Action::Delete) => Action::Delete,
        _ => {
            return Err(Error::invalid(
                field,
                "must be READ, CREATE, UPDATE or DELETE",
            ));
        }
    })
}

fn action_out(a: Action) -> i32 {
    (match a {
        Action::Read => pb::Action::Read,
        Action::Create => pb::Action::Create,
        Action::Update => pb::Action::Update,
        Action::Delete => pb::Action::Delete,
    }) as i32
}

fn access_in(a: i32) -> Result<FieldAccess> {
    Ok(match pb::FieldAccess::try_from(a) {
        Ok(pb::FieldAccess::Hidden) => FieldAccess::Hidden,
        Ok(pb::FieldAccess::ReadOnly) => FieldAccess::ReadOnly,
        Ok(pb::FieldAccess::ReadWrite) => FieldAccess::ReadWrite,
        _ => {
            return Err(Error::invalid(
                "access",
                "must be HIDDEN, READ_ONLY or READ_WRITE",
            ));
        }
    })
}

fn access_out(a: FieldAccess) -> i32 {
    (match a {
        FieldAccess::Hidden => pb::FieldAccess::Hidden,
        FieldAccess::ReadOnly => pb::FieldAccess::ReadOnly,
        FieldAccess::ReadWrite => pb::FieldAccess::ReadWrite,
    }) as i32
}

pub fn grants_in(grants: Vec<pb::Grant>) -> Result<Vec<Grant>> {
    grants
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            Ok(Grant {
                collection: g.collection.trim().to_owned(),
                actions: g
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(j, a)| action_in(&format!("grants[{i}].actions[{j}]"), *a))
                    .collect::<Result<_>>()?,
                scope: scope_in(g.scope).map_err(|e| e.in_field(&format!("grants[{i}]")))?,
            })
        })
        .collect()
}

fn grants_out(grants: Vec<Grant>) -> Vec<pb::Grant> {
    grants
        .into_iter()
        .map(|g| pb::Grant {
            collection: g.collection,
            actions: g.actions.into_iter().map(action_out).collect(),
            scope: scope_out(g.scope),
        })
        .collect()
}

fn rules_in(rules: Vec<pb::FieldRule>) -> Result<Vec<FieldRule>> {
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(FieldRule {
                collection: r.collection.trim().to_owned(),
                field: r.field.trim().to_owned(),
                access: access_in(r.access)
                    .map_err(|e| e.in_field(&format!("field_rules[{i}]")))?,
            })
        })
        .collect()
}

fn rules_out(rules: Vec<FieldRule>) -> Vec<pb::FieldRule> {
    rules
        .into_iter()
        .map(|r| pb::FieldRule {
            collection: r.collection,
            field: r.field,
            access: access_out(r.access),
        })
        .collect()
}

fn role_in(key: String, r: pb::Role) -> Result<model::Role> {
    Ok(model::Role {
        key,
        display_name: r.display_name,
        grants: grants_in(r.grants)?,
        field_rules: rules_in(r.field_rules)?,
    })
}

fn role_out(r: Record<model::Role>) -> pb::Role {
    let d = r.data;
    pb::Role {
        name: format!("roles/{}", d.key),
        display_name: d.display_name,
        grants: grants_out(d.grants),
        field_rules: rules_out(d.field_rules),
        create_time: Some(ts(r.meta.create_time)),
        update_time: Some(ts(r.meta.update_time)),
        etag: r.meta.etag(),
        hidden_fields: hidden(&r.hidden),
    }
}

/// `roles/{key}` -> (key, id).
async fn resolve(ctx: &Ctx, field: &str, name: &str) -> Result<(String, Uuid)> {
    let key = name
        .trim()
        .strip_prefix("roles/")
        .filter(|k| crm_core::validate::slug(field, k).is_ok())
        .ok_or_else(|| Error::invalid(field, "must be a resource name of the form roles/{role}"))?;
    let id = role::find_by_key(&ctx.db.conn, ctx.tenant(), key)
        .await?
        .ok_or_else(|| Error::not_found(format!("roles/{key}")))?;
    Ok((key.to_owned(), id))
}

#[tonic::async_trait]
impl AccessService for Access {
    async fn create_role(
        &self,
        r: Request<pb::CreateRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let msg = convert::required("role", r.role).or_status()?;
        crm_core::validate::slug("role_id", r.role_id.trim()).or_status()?;
        let data = role_in(r.role_id.trim().to_owned(), msg)
            .map_err(|e| e.in_field("role"))
            .or_status()?;
        let rec = ctx
            .create(data, &r.request_id)
            .await
            .map_err(|e| match e.kind {
                crm_core::ErrorKind::AlreadyExists => {
                    Error::already_exists(format!("roles/{} already exists", r.role_id.trim()))
                }
                _ => e.in_field("role"),
            })
            .or_status()?;
        Ok(Response::new(role_out(rec)))
    }

    async fn get_role(&self, r: Request<pb::GetRoleRequest>) -> Result<Response<pb::Role>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (_, id) = resolve(&ctx, "name", &r.get_ref().name).await.or_status()?;
        Ok(Response::new(role_out(
            ctx.get::<model::Role>(id).await.or_status()?,
        )))
    }

    async fn list_roles(
        &self,
        r: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let page = ctx.list::<model::Role>(&p).await.or_status()?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: page.items.into_iter().map(role_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_role(
        &self,
        r: Request<pb::UpdateRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let msg = convert::required("role", r.role).or_status()?;
        let (key, id) = resolve(&ctx, "role.name", &msg.name).await.or_status()?;
        let mask = convert::mask(r.update_mask);
        model::role::guard_builtin(&key, Some(&mask)).or_status()?;
        let etag = msg.etag.clone();
        let data = role_in(key, msg)
            .map_err(|e| e.in_field("role"))
            .or_status()?;
        let rec = ctx
            .update(id, data, &mask, &etag)
            .await
            .map_err(|e| e.in_field("role"))
            .or_status()?;
        Ok(Response::new(role_out(rec)))
    }

    async fn delete_role(&self, r: Request<pb::DeleteRoleRequest>) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let (key, id) = resolve(&ctx, "name", &r.get_ref().name).await.or_status()?;
        model::role::guard_builtin(&key, None).or_status()?;
        ctx.delete::<model::Role>(id, &r.get_ref().etag)
            .await
            .or_status()?;
        Ok(Response::new(()))
    }

    async fn get_my_access(
        &self,
        r: Request<pb::GetMyAccessRequest>,
    ) -> Result<Response<pb::Access>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let roles = ctx.policy.roles();
        Ok(Response::new(pb::Access {
            tenant: ctx.principal.tenant.clone(),
            user: format!("users/{}", ctx.principal.user),
            roles: ctx.principal.roles.clone(),
            grants: grants_out(roles.iter().flat_map(|r| r.grants.clone()).collect()),
            field_rules: rules_out(roles.iter().flat_map(|r| r.field_rules.clone()).collect()),
        }))
    }
}
