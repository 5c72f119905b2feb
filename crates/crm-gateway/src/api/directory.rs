//! DirectoryService: users, teams, territories.

use super::{Gateway, Wire};
use crate::convert::{hidden, name, reference, references, ts};
use crm_api::v1 as pb;
use crm_api::v1::directory_service_server::DirectoryService;
use crm_core::error::Result;
use crm_core::ids::format_name;
use crm_core::model;
use crm_core::resource::Record;
use pb::{ListTeamsResponse, ListTerritoriesResponse, ListUsersResponse};

pub struct Directory(pub Gateway);

impl Wire<model::User> for pb::User {
    const FIELD: &'static str = "user";

    fn into_domain(self) -> Result<model::User> {
        Ok(model::User {
            display_name: self.display_name,
            email: self.email,
            manager: reference("manager", "users", &self.manager)?,
            teams: references("teams", "teams", &self.teams)?,
            territories: references("territories", "territories", &self.territories)?,
            skills: self.skills,
            capacity: self.capacity,
            active: self.active,
        })
    }

    fn from_record(r: Record<model::User>) -> Self {
        let d = r.data;
        pb::User {
            name: name("users", Some(r.meta.id)),
            display_name: d.display_name,
            email: d.email,
            manager: name("users", d.manager),
            teams: d
                .teams
                .into_iter()
                .map(|t| format_name("teams", t))
                .collect(),
            territories: d
                .territories
                .into_iter()
                .map(|t| format_name("territories", t))
                .collect(),
            skills: d.skills,
            capacity: d.capacity,
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

impl Wire<model::Team> for pb::Team {
    const FIELD: &'static str = "team";

    fn into_domain(self) -> Result<model::Team> {
        Ok(model::Team {
            display_name: self.display_name,
            parent: reference("parent", "teams", &self.parent)?,
            lead: reference("lead", "users", &self.lead)?,
        })
    }

    fn from_record(r: Record<model::Team>) -> Self {
        let d = r.data;
        pb::Team {
            name: name("teams", Some(r.meta.id)),
            display_name: d.display_name,
            parent: name("teams", d.parent),
            lead: name("users", d.lead),
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

impl Wire<model::Territory> for pb::Territory {
    const FIELD: &'static str = "territory";

    fn into_domain(self) -> Result<model::Territory> {
        Ok(model::Territory {
            display_name: self.display_name,
            parent: reference("parent", "territories", &self.parent)?,
            regions: self.regions,
        })
    }

    fn from_record(r: Record<model::Territory>) -> Self {
        let d = r.data;
        pb::Territory {
            name: name("territories", Some(r.meta.id)),
            display_name: d.display_name,
            parent: name("territories", d.parent),
            regions: d.regions,
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

crate::service_impl!(DirectoryService, Directory, [
    model::User => pb::User {
        create_user(pb::CreateUserRequest, user),
        get_user(pb::GetUserRequest),
        list_users(pb::ListUsersRequest => ListUsersResponse . users),
        update_user(pb::UpdateUserRequest),
        delete_user(pb::DeleteUserRequest)
    },
    model::Team => pb::Team {
        create_team(pb::CreateTeamRequest, team),
        get_team(pb::GetTeamRequest),
        list_teams(pb::ListTeamsRequest => ListTeamsResponse . teams),
        update_team(pb::UpdateTeamRequest),
        delete_team(pb::DeleteTeamRequest)
    },
    model::Territory => pb::Territory {
        create_territory(pb::CreateTerritoryRequest, territory),
        get_territory(pb::GetTerritoryRequest),
        list_territories(pb::ListTerritoriesRequest => ListTerritoriesResponse . territories),
        update_territory(pb::UpdateTerritoryRequest),
        delete_territory(pb::DeleteTerritoryRequest)
    }
]);
