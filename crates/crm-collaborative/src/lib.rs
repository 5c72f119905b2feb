//! Collaborative CRM (C1-C3): the pure domain logic of service cases, SLA clocks and channel
//! intake. Plain data in and out, no database, no gRPC, no clock: time is always an argument.
//!
//! - [`calendar`]: business-hours calendars in an IANA time zone (chrono-tz) with weekly hours,
//!   holidays and extra working days; business time between two instants, the instant a business
//!   duration ends, open or not, next opening. Correct across DST changes; never uses the
//!   server's time zone.
//! - [`sla`]: SLA policies chosen per case by priority, category and customer tier (ordered
//!   rules, first match wins, with a default); the SLA clock with pauses, first response,
//!   resolution and reopening; elapsed and remaining business time, due and warning instants,
//!   status, and the durable timers the store must set.
//! - [`case`]: the case status flow and its legal transitions, which of them pause or resume the
//!   SLA clock, the recorded steps, and the customer-facing view of a case.
//! - [`email`]: intake of raw RFC 5322 / MIME messages (mail-parser) within limits: ids for
//!   threading, normalised addresses, bodies, attachment metadata, legacy charsets; threading
//!   into conversations.
//! - [`calls`]: call records with E.164 numbers (phonenumber) and typed outcomes.
//!
//! On crm-core's engine (the store and use-case layers the gateway serves):
//!
//! - [`interaction`]: the `interactions` resource (C1), one per contact on any channel.
//! - [`intake`]: e-mail, call and chat intake with matching and threading (C2); timelines.
//! - [`mailbox`]: IMAP accounts polled by a durable job into the timeline (C2).
//! - [`cases`]: the `cases` and `slaPolicySets` resources, case use cases and the SLA timer
//!   job (C3).
//!
//! Configuration types (calendars, SLA policies, e-mail limits) are serde structs, to be stored as
//! JSON by a store layer; each is validated into a working type whose errors name the offending
//! field path (`calendar.weekly_hours[2].start`, `sla.rules[1].policy`).
#![warn(missing_docs)]

pub mod calendar;
pub mod calls;
pub mod case;
pub mod cases;
pub mod email;
pub mod intake;
pub mod interaction;
pub mod mailbox;
pub mod sla;

/// Registers the crate's collections and schema changes (called by the gateway at start).
pub fn register(r: &mut crm_core::registry::RegistryBuilder) {
    r.resource::<interaction::Interaction>()
        .resource::<cases::SlaPolicySet>()
        .resource::<cases::Case>()
        .resource::<mailbox::MailboxAccount>();
    r.schema(interaction::SCHEMA);
    r.schema(cases::SCHEMA);
    r.schema(cases::SOURCE_SCHEMA);
    r.schema(cases::ASSIGNMENT_SCHEMA);
    r.schema(mailbox::SCHEMA);
}

/// Registers the crate's job handlers: the SLA timers of cases and mailbox polls.
pub fn register_jobs(h: &mut crm_core::jobs::JobHandlers) -> crm_core::Result<()> {
    cases::register_jobs(h)?;
    mailbox::register_jobs(h)
}
