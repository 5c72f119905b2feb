//! The tenant set-up the create-lead scenario measures against, made through the public API
//! when the tenant has none: 20 sales users, an active grading policy (three rules) and an
//! active assignment rule set (DACH leads round-robin over ten users; every other lead to
//! the least loaded of ten others, without capacity limits: with one, routed creates for the
//! same owner take turns up to their commit, see crm_operational::routing).
//! An existing active policy or rule set is left as it is.

use crate::authed;
use crm_api::v1::{
    self, directory_service_client::DirectoryServiceClient, lead_service_client::LeadServiceClient,
};
use tonic::transport::Channel;

/// Users the rule set routes to: `bench-rep-00` .. `bench-rep-19`.
const REPS: usize = 20;

/// Makes sure the tenant of `token` has the users, the grading policy and the assignment
/// rule set described in the module doc. Returns what it did, for the log.
pub async fn ensure(chan: &Channel, token: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut dir = DirectoryServiceClient::new(chan.clone());
    let mut leads = LeadServiceClient::new(chan.clone());
    let mut done = Vec::new();

    let existing = dir
        .list_users(authed(
            token,
            v1::ListUsersRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .users;
    let mut reps: Vec<(String, String)> = existing
        .into_iter()
        .filter(|u| u.email.starts_with("bench-rep-"))
        .map(|u| (u.email.clone(), u.name.clone()))
        .collect();
    for i in 0..REPS {
        let email = format!("bench-rep-{i:02}@bench.example");
        if reps.iter().any(|(e, _)| *e == email) {
            continue;
        }
        let u = dir
            .create_user(authed(
                token,
                v1::CreateUserRequest {
                    user: Some(v1::User {
                        display_name: format!("Bench rep {i:02}"),
                        email: email.clone(),
                        active: true,
                        capacity: 0,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        reps.push((email, u.name));
        done.push(format!("user {i:02}"));
    }
    reps.sort();
    let names: Vec<String> = reps.into_iter().map(|(_, n)| n).collect();
    let (dach, rest) = names.split_at(REPS / 2);

    let active = leads
        .list_lead_grading_policies(authed(
            token,
            v1::ListLeadGradingPoliciesRequest {
                filter: "active = true".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .policies;
    if active.is_empty() {
        let rule = |id: &str, when: v1::grading_condition::Condition, points| v1::GradingRule {
            id: id.into(),
            when: Some(v1::GradingCondition {
                condition: Some(when),
            }),
            points,
            ..Default::default()
        };
        let values = |v: &[&str]| v1::ValueList {
            values: v.iter().map(|s| (*s).to_owned()).collect(),
        };
        leads
            .create_lead_grading_policy(authed(
                token,
                v1::CreateLeadGradingPolicyRequest {
                    policy: Some(v1::LeadGradingPolicy {
                        display_name: "crm-bench".into(),
                        active: true,
                        rules: vec![
                            rule(
                                "web",
                                v1::grading_condition::Condition::Source(values(&["web_form"])),
                                30,
                            ),
                            rule(
                                "dach",
                                v1::grading_condition::Condition::Region(values(&[
                                    "DE", "AT", "CH",
                                ])),
                                20,
                            ),
                            rule(
                                "fair",
                                v1::grading_condition::Condition::Source(values(&["trade_show"])),
                                40,
                            ),
                        ],
                        thresholds: Some(v1::GradeThresholds {
                            hot: 60,
                            warm: 40,
                            cold: 10,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await?;
        done.push("grading policy".into());
    }

    let active = leads
        .list_assignment_rule_sets(authed(
            token,
            v1::ListAssignmentRuleSetsRequest {
                filter: "active = true".into(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .rule_sets;
    if active.is_empty() {
        let targets = |users: &[String]| {
            users
                .iter()
                .map(|u| v1::AssignmentTarget {
                    user: u.clone(),
                    weight: 1,
                    regional_manager: false,
                })
                .collect()
        };
        leads
            .create_assignment_rule_set(authed(
                token,
                v1::CreateAssignmentRuleSetRequest {
                    rule_set: Some(v1::AssignmentRuleSet {
                        display_name: "crm-bench".into(),
                        active: true,
                        mode: v1::RuleSetMode::Ordered as i32,
                        rules: vec![
                            v1::AssignmentRule {
                                id: "dach".into(),
                                regions: vec!["DE".into(), "AT".into(), "CH".into()],
                                targets: targets(dach),
                                strategy: v1::AssignmentStrategy::RoundRobin as i32,
                                ..Default::default()
                            },
                            v1::AssignmentRule {
                                id: "rest".into(),
                                targets: targets(rest),
                                strategy: v1::AssignmentStrategy::LeastLoaded as i32,
                                ..Default::default()
                            },
                        ],
                        fallback: dach.first().cloned().unwrap_or_default(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await?;
        done.push("assignment rule set".into());
    }
    Ok(if done.is_empty() {
        "lead set-up present".into()
    } else {
        format!("lead set-up made: {}", done.join(", "))
    })
}
