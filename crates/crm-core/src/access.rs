//! Permissions (K4): what a principal may do with a collection (record-level scope) and with
//! each field (field-level rules). Pure evaluation; the roles come from the database.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// How far access reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    Own,
    Team,
    Subtree,
    Territory,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// Field access, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FieldAccess {
    Hidden,
    ReadOnly,
    ReadWrite,
}

/// Actions on a collection (`"*"` for every collection) within a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub collection: String,
    pub actions: Vec<Action>,
    pub scope: Scope,
}

/// Access to one field of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRule {
    pub collection: String,
    pub field: String,
    pub access: FieldAccess,
}

/// What one role allows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRights {
    #[serde(default)]
    pub grants: Vec<Grant>,
    #[serde(default)]
    pub field_rules: Vec<FieldRule>,
}

/// The set of scopes a principal has for one action on one collection; empty means denied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeSet {
    pub own: bool,
    pub team: bool,
    pub subtree: bool,
    pub territory: bool,
    pub all: bool,
}

impl ScopeSet {
    pub fn is_empty(&self) -> bool {
        !(self.own || self.team || self.subtree || self.territory || self.all)
    }
    fn add(&mut self, s: Scope) {
        match s {
            Scope::Own => self.own = true,
            Scope::Team => self.team = true,
            Scope::Subtree => self.subtree = true,
            Scope::Territory => self.territory = true,
            Scope::All => self.all = true,
        }
    }
    pub fn scopes(&self) -> Vec<Scope> {
        let mut v = Vec::new();
        for (on, s) in [
            (self.own, Scope::Own),
            (self.team, Scope::Team),
            (self.subtree, Scope::Subtree),
            (self.territory, Scope::Territory),
            (self.all, Scope::All),
        ] {
            if on {
                v.push(s);
            }
        }
        v
    }
}

/// The union of a principal's roles.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: Vec<RoleRights>,
}

impl Policy {
    pub fn new(roles: Vec<RoleRights>) -> Self {
        Self { roles }
    }

    /// Everything allowed everywhere (operators' tools, the demo loader).
    pub fn superuser() -> Self {
        Self::new(vec![RoleRights {
            grants: vec![Grant {
                collection: "*".into(),
                actions: vec![Action::Read, Action::Create, Action::Update, Action::Delete],
                scope: Scope::All,
            }],
            field_rules: vec![],
        }])
    }

    pub fn roles(&self) -> &[RoleRights] {
        &self.roles
    }

    /// The scopes in which `action` on `collection` is allowed.
    pub fn scopes(&self, collection: &str, action: Action) -> ScopeSet {
        let mut set = ScopeSet::default();
        for g in self.roles.iter().flat_map(|r| &r.grants) {
            if (g.collection == collection || g.collection == "*") && g.actions.contains(&action) {
                set.add(g.scope);
            }
        }
        set
    }

    /// A field's access: the most generous of the roles that grant anything on the
    /// collection; a role without a rule for the field gives READ_WRITE.
    pub fn field_access(&self, collection: &str, field: &str) -> FieldAccess {
        self.field_access_in(collection, collection, field)
    }

    /// A field's access for a collection whose grants are those of `permission` (a child
    /// resource such as a contact's positions follows its parent's grants; its field rules
    /// name the child collection).
    pub fn field_access_in(&self, permission: &str, collection: &str, field: &str) -> FieldAccess {
        let mut best: Option<FieldAccess> = None;
        for r in &self.roles {
            let grants_collection = r
                .grants
                .iter()
                .any(|g| g.collection == permission || g.collection == "*");
            if !grants_collection {
                continue;
            }
            let access = r
                .field_rules
                .iter()
                .find(|f| f.collection == collection && f.field == field)
                .map(|f| f.access)
                .unwrap_or(FieldAccess::ReadWrite);
            best = Some(best.map_or(access, |b| b.max(access)));
        }
        best.unwrap_or(FieldAccess::Hidden)
    }
}

/// Everyone at or below `root` in the management hierarchy (`(user, manager)` pairs),
/// `root` included. Cycles in the data cannot loop.
pub fn management_subtree(users: &[(Uuid, Option<Uuid>)], root: Uuid) -> Vec<Uuid> {
    let mut reports: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (u, m) in users {
        if let Some(m) = m {
            reports.entry(*m).or_default().push(*u);
        }
    }
    closure(&reports, [root])
}

/// The given territories and every territory below them (`(territory, parent)` pairs).
pub fn territory_closure(
    territories: &[(Uuid, Option<Uuid>)],
    roots: impl IntoIterator<Item = Uuid>,
) -> Vec<Uuid> {
    let mut children: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (t, p) in territories {
        if let Some(p) = p {
            children.entry(*p).or_default().push(*t);
        }
    }
    closure(&children, roots)
}

fn closure(edges: &HashMap<Uuid, Vec<Uuid>>, roots: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<Uuid> = roots.into_iter().collect();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            out.push(n);
            if let Some(next) = edges.get(&n) {
                stack.extend(next.iter().copied());
            }
        }
    }
    out
}

/// Would making `parent` the parent of `node` close a cycle? `parent_of` maps a node to its
/// current parent.
pub fn creates_cycle(node: Uuid, parent: Uuid, parent_of: &HashMap<Uuid, Uuid>) -> bool {
    let mut cur = Some(parent);
    let mut steps = 0usize;
    while let Some(c) = cur {
        if c == node {
            return true;
        }
        steps += 1;
        if steps > parent_of.len() + 1 {
            return true;
        }
        cur = parent_of.get(&c).copied();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rep() -> RoleRights {
        RoleRights {
            grants: vec![Grant {
                collection: "contacts".into(),
                actions: vec![Action::Read, Action::Update],
                scope: Scope::Own,
            }],
            field_rules: vec![
                FieldRule {
                    collection: "contacts".into(),
                    field: "phones".into(),
                    access: FieldAccess::Hidden,
                },
                FieldRule {
                    collection: "contacts".into(),
                    field: "region".into(),
                    access: FieldAccess::ReadOnly,
                },
            ],
        }
    }

    fn manager() -> RoleRights {
        RoleRights {
            grants: vec![Grant {
                collection: "*".into(),
                actions: vec![Action::Read],
                scope: Scope::Subtree,
            }],
            field_rules: vec![],
        }
    }

    #[test]
    fn scopes_are_unioned() {
        let p = Policy::new(vec![rep(), manager()]);
        let s = p.scopes("contacts", Action::Read);
        assert!(s.own && s.subtree && !s.all);
        assert!(p.scopes("contacts", Action::Delete).is_empty());
        assert!(p.scopes("accounts", Action::Read).subtree);
        assert!(
            Policy::new(vec![rep()])
                .scopes("accounts", Action::Read)
                .is_empty()
        );
    }

    #[test]
    fn field_rules_take_the_most_generous_role() {
        let only_rep = Policy::new(vec![rep()]);
        assert_eq!(
            only_rep.field_access("contacts", "phones"),
            FieldAccess::Hidden
        );
        assert_eq!(
            only_rep.field_access("contacts", "region"),
            FieldAccess::ReadOnly
        );
        assert_eq!(
            only_rep.field_access("contacts", "emails"),
            FieldAccess::ReadWrite
        );
        let both = Policy::new(vec![rep(), manager()]);
        assert_eq!(
            both.field_access("contacts", "phones"),
            FieldAccess::ReadWrite
        );
        // A role with no grant on the collection does not widen field access.
        let unrelated = RoleRights {
            grants: vec![Grant {
                collection: "products".into(),
                actions: vec![Action::Read],
                scope: Scope::All,
            }],
            field_rules: vec![],
        };
        let p = Policy::new(vec![rep(), unrelated]);
        assert_eq!(p.field_access("contacts", "phones"), FieldAccess::Hidden);
    }

    #[test]
    fn subtree_and_cycles() {
        let [a, b, c, d] = [
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        ];
        let users = vec![(a, None), (b, Some(a)), (c, Some(b)), (d, None)];
        let mut s = management_subtree(&users, a);
        s.sort();
        let mut want = vec![a, b, c];
        want.sort();
        assert_eq!(s, want);
        let parent_of: HashMap<Uuid, Uuid> = [(b, a), (c, b)].into_iter().collect();
        assert!(creates_cycle(a, c, &parent_of));
        assert!(!creates_cycle(d, c, &parent_of));
        assert!(creates_cycle(a, a, &parent_of));
    }

    proptest! {
        #[test]
        fn closure_terminates_on_any_graph(edges in proptest::collection::vec((0u8..20, proptest::option::of(0u8..20)), 0..60)) {
            let ids: Vec<Uuid> = (0..20).map(|i| Uuid::from_u128(i as u128 + 1)).collect();
            let pairs: Vec<(Uuid, Option<Uuid>)> = edges.iter().map(|(a, b)| (ids[*a as usize], b.map(|b| ids[b as usize]))).collect();
            let s = management_subtree(&pairs, ids[0]);
            prop_assert!(s.contains(&ids[0]));
            prop_assert!(s.len() <= 20);
            let parent_of: HashMap<Uuid, Uuid> = pairs.iter().filter_map(|(a, b)| b.map(|b| (*a, b))).collect();
            let _ = creates_cycle(ids[1], ids[2], &parent_of);
        }
    }
}
