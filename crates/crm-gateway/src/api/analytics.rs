//! AnalyticsService: RFM and value configurations, runs and results, lifecycle models and
//! stages, segments, and the sales, funnel and cohort reports (crm-analytical).

use super::{Gateway, Wire};
use crate::convert::{self, hidden, name, opt_ts, reference, ts};
use crate::status::OrStatus;
use crm_analytical::lifecycle::{Condition, Stage, TransitionRule};
use crm_analytical::money::{Rate, RateTable};
use crm_analytical::report::{Granularity, chart};
use crm_analytical::rfm::{Binning, MonetaryBasis, RfmConfig, ScoreRange, SegmentMap, SegmentRule};
use crm_analytical::store::reports::{self, CohortQuery, FunnelQuery};
use crm_analytical::store::rfm_runs::{self, StartRun};
use crm_analytical::store::sales::{self, Dimension, SalesQuery};
use crm_analytical::store::{
    LifecycleModel, LifecycleState, LifecycleTransition, SEGMENT_OUTPUT_FIELDS, Segment,
    SegmentMember, lifecycle, segments,
};
use crm_analytical::store::{ResultStatus, RfmResult, RfmRun, RfmSettings, RunState, RunStats};
use crm_analytical::value::{Normalisation, ValueModel, Weights};
use crm_api::google::longrunning as lro;
use crm_api::v1 as pb;
use crm_api::v1::analytics_service_server::AnalyticsService;
use crm_core::error::{Error, Result};
use crm_core::resource::Record;
use pb::{ListLifecycleModelsResponse, ListRfmConfigsResponse, ListSegmentsResponse};
use std::collections::BTreeMap;
use tonic::{Request, Response, Status};

pub struct Analytics(pub Gateway);

fn binning_in(field: &str, b: Option<pb::RfmBinning>) -> Result<Binning> {
    use pb::RfmBinningMethod as P;
    let Some(b) = b else {
        return Ok(Binning::Quantiles);
    };
    Ok(match P::try_from(b.method) {
        Ok(P::Unspecified | P::Quantiles) => Binning::Quantiles,
        Ok(P::Thresholds) => Binning::Thresholds {
            values: b.thresholds,
        },
        Ok(P::ThresholdsPerCurrency) => Binning::ThresholdsPerCurrency {
            values: b
                .currency_thresholds
                .into_iter()
                .map(|(k, v)| (k, v.values))
                .collect(),
        },
        Err(_) => {
            return Err(crate::convert::unknown_enum(
                &format!("{field}.method"),
                b.method,
            ));
        }
    })
}

fn binning_out(b: Binning) -> pb::RfmBinning {
    use pb::RfmBinningMethod as P;
    match b {
        Binning::Quantiles => pb::RfmBinning {
            method: P::Quantiles as i32,
            ..Default::default()
        },
        Binning::Thresholds { values } => pb::RfmBinning {
            method: P::Thresholds as i32,
            thresholds: values,
            ..Default::default()
        },
        Binning::ThresholdsPerCurrency { values } => pb::RfmBinning {
            method: P::ThresholdsPerCurrency as i32,
            currency_thresholds: values
                .into_iter()
                .map(|(k, values)| (k, pb::RfmThresholds { values }))
                .collect(),
            ..Default::default()
        },
    }
}

fn range_in(r: Option<pb::ScoreRange>) -> Option<ScoreRange> {
    r.filter(|r| r.min != 0 || r.max != 0).map(|r| ScoreRange {
        min: u8::try_from(r.min).unwrap_or(u8::MAX),
        max: u8::try_from(r.max).unwrap_or(u8::MAX),
    })
}

fn range_out(r: Option<ScoreRange>) -> Option<pb::ScoreRange> {
    r.map(|r| pb::ScoreRange {
        min: i32::from(r.min),
        max: i32::from(r.max),
    })
}

fn rfm_in(p: Option<pb::RfmParameters>) -> Result<RfmConfig> {
    let Some(p) = p else {
        return Ok(RfmConfig::default());
    };
    let bins = match p.bins {
        0 => crm_analytical::rfm::DEFAULT_BINS,
        b => u8::try_from(b).unwrap_or(u8::MAX),
    };
    use pb::RfmMonetaryBasis as P;
    let monetary_basis = match P::try_from(p.monetary_basis) {
        Ok(P::Unspecified | P::PerCurrency) => MonetaryBasis::PerCurrency,
        Ok(P::Converted) => MonetaryBasis::Converted {
            rates: RateTable {
                target: p.target_currency,
                rates: p
                    .rates
                    .into_iter()
                    .map(|(k, r)| {
                        (
                            k,
                            Rate {
                                numerator: r.numerator,
                                denominator: r.denominator,
                            },
                        )
                    })
                    .collect(),
            },
        },
        Err(_) => {
            return Err(crate::convert::unknown_enum(
                "rfm.monetary_basis",
                p.monetary_basis,
            ));
        }
    };
    let segments = if p.segments.is_empty() {
        SegmentMap::classic(bins)
    } else {
        SegmentMap {
            rules: p
                .segments
                .into_iter()
                .map(|s| SegmentRule {
                    segment: s.segment,
                    r: range_in(s.r),
                    f: range_in(s.f),
                    m: range_in(s.m),
                })
                .collect(),
        }
    };
    Ok(RfmConfig {
        bins,
        recency: binning_in("rfm.recency", p.recency)?,
        frequency: binning_in("rfm.frequency", p.frequency)?,
        monetary: binning_in("rfm.monetary", p.monetary)?,
        monetary_basis,
        segments,
    })
}

fn rfm_out(c: RfmConfig) -> pb::RfmParameters {
    use pb::RfmMonetaryBasis as P;
    let (basis, target_currency, rates) = match c.monetary_basis {
        MonetaryBasis::PerCurrency => (P::PerCurrency, String::new(), Default::default()),
        MonetaryBasis::Converted { rates } => (
            P::Converted,
            rates.target,
            rates
                .rates
                .into_iter()
                .map(|(k, r)| {
                    (
                        k,
                        pb::ExchangeRate {
                            numerator: r.numerator,
                            denominator: r.denominator,
                        },
                    )
                })
                .collect(),
        ),
    };
    pb::RfmParameters {
        bins: i32::from(c.bins),
        recency: Some(binning_out(c.recency)),
        frequency: Some(binning_out(c.frequency)),
        monetary: Some(binning_out(c.monetary)),
        monetary_basis: basis as i32,
        target_currency,
        rates,
        segments: c
            .segments
            .rules
            .into_iter()
            .map(|s| pb::RfmSegmentRule {
                segment: s.segment,
                r: range_out(s.r),
                f: range_out(s.f),
                m: range_out(s.m),
            })
            .collect(),
    }
}

fn value_in(v: Option<pb::ValueModel>) -> Result<ValueModel> {
    let Some(v) = v else {
        return Ok(ValueModel::default());
    };
    use pb::ValueNormalisation as P;
    let normalisation = match P::try_from(v.normalisation) {
        Ok(P::Unspecified | P::Rank) => Normalisation::Rank,
        Ok(P::MinMax) => Normalisation::MinMax,
        Err(_) => {
            return Err(crate::convert::unknown_enum(
                "value_model.normalisation",
                v.normalisation,
            ));
        }
    };
    let w = v.weights.unwrap_or_default();
    Ok(ValueModel {
        version: 1,
        effective_from: None,
        weights: Weights {
            recency: w.recency,
            frequency: w.frequency,
            monetary: w.monetary,
            margin: w.margin,
            tenure: w.tenure,
            service_cost: w.service_cost,
        },
        normalisation,
    })
}

fn value_out(v: ValueModel, version: i64) -> pb::ValueModel {
    use pb::ValueNormalisation as P;
    pb::ValueModel {
        weights: Some(pb::ValueWeights {
            recency: v.weights.recency,
            frequency: v.weights.frequency,
            monetary: v.weights.monetary,
            margin: v.weights.margin,
            tenure: v.weights.tenure,
            service_cost: v.weights.service_cost,
        }),
        normalisation: match v.normalisation {
            Normalisation::Rank => P::Rank,
            Normalisation::MinMax => P::MinMax,
        } as i32,
        version,
    }
}

impl Wire<RfmSettings> for pb::RfmConfig {
    const FIELD: &'static str = "config";

    fn into_domain(self) -> Result<RfmSettings> {
        Ok(RfmSettings {
            display_name: self.display_name,
            rfm: rfm_in(self.rfm)?,
            value_model: value_in(self.value_model)?,
            time_zone: self.time_zone,
        })
    }

    fn from_record(r: Record<RfmSettings>) -> Self {
        let d = r.data;
        pb::RfmConfig {
            name: name("rfmConfigs", Some(r.meta.id)),
            display_name: d.display_name,
            rfm: Some(rfm_out(d.rfm)),
            value_model: Some(value_out(d.value_model, r.meta.revision)),
            time_zone: d.time_zone,
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

fn run_state(s: RunState) -> i32 {
    use pb::RfmRunState as P;
    (match s {
        RunState::Running => P::Running,
        RunState::Succeeded => P::Succeeded,
        RunState::Failed => P::Failed,
    }) as i32
}

fn stats_out(s: RunStats) -> pb::RfmRunStats {
    pb::RfmRunStats {
        customers: s.customers,
        scored: s.scored,
        no_orders: s.no_orders,
        no_purchases: s.no_purchases,
        orders_in_period: s.orders_in_period,
        future_dated_orders: s.future_dated_orders,
        orders_without_contact: s.orders_without_contact,
    }
}

fn run_out(r: Record<RfmRun>) -> pb::RfmRun {
    let d = r.data;
    pb::RfmRun {
        name: name("rfmRuns", Some(r.meta.id)),
        config: name("rfmConfigs", d.config),
        config_revision: d.config_revision,
        period_start_time: opt_ts(d.period_from),
        as_of_time: opt_ts(d.as_of),
        state: run_state(d.state),
        operation: d.operation,
        stats: Some(stats_out(d.stats)),
        error: d.error,
        create_time: Some(ts(r.meta.create_time)),
        finish_time: opt_ts(d.finish_time),
    }
}

fn result_out(r: Record<RfmResult>) -> pb::RfmResult {
    use pb::RfmResultStatus as P;
    let d = r.data;
    pb::RfmResult {
        name: name("rfmResults", Some(r.meta.id)),
        run: name("rfmRuns", d.run),
        customer: name("contacts", d.customer),
        status: (match d.status {
            ResultStatus::Scored => P::Scored,
            ResultStatus::NoOrders => P::NoOrders,
            ResultStatus::NoPurchases => P::NoPurchases,
        }) as i32,
        recency_days: d.last_purchase.map(|_| d.recency_days),
        last_purchase_time: opt_ts(d.last_purchase),
        frequency: d.frequency,
        orders: d.orders,
        monetary_minor: d.monetary.into_iter().collect(),
        r: i32::try_from(d.r).unwrap_or(0),
        f: i32::try_from(d.f).unwrap_or(0),
        m: i32::try_from(d.m).unwrap_or(0),
        m_by_currency: d
            .m_by_currency
            .into_iter()
            .map(|(k, v)| (k, i32::try_from(v).unwrap_or(0)))
            .collect(),
        monetary_converted_minor: d.monetary_converted,
        segment: d.segment,
        value: Some(pb::CustomerValue {
            score: d.value.score,
            model_version: d.value.model_version,
            contributions: d
                .value
                .contributions
                .into_iter()
                .map(|c| pb::ValueContribution {
                    measure: c.measure,
                    weight: c.weight,
                    normalised: c.normalised,
                    contribution: c.contribution,
                    missing: c.missing,
                })
                .collect(),
        }),
        hidden_fields: hidden(&r.hidden),
    }
}

fn condition_in(field: &str, c: pb::LifecycleCondition) -> Result<Condition> {
    Condition::parse(&c.fact, &c.op, c.value, &c.counter, &c.any_of)
        .map_err(|e| Error::from(e.in_field(field)))
}

fn condition_out(c: Condition) -> pb::LifecycleCondition {
    let (fact, op, value, counter, any_of) = c.parts();
    pb::LifecycleCondition {
        fact: fact.into(),
        op: op.into(),
        value,
        counter,
        any_of,
    }
}

impl Wire<LifecycleModel> for pb::LifecycleModel {
    const FIELD: &'static str = "lifecycle_model";

    fn into_domain(self) -> Result<LifecycleModel> {
        let mut transitions = Vec::with_capacity(self.transitions.len());
        let mut violations = Vec::new();
        for (i, t) in self.transitions.into_iter().enumerate() {
            let mut when = Vec::with_capacity(t.when.len());
            for (k, c) in t.when.into_iter().enumerate() {
                match condition_in(&format!("transitions[{i}].when[{k}]"), c) {
                    Ok(c) => when.push(c),
                    Err(e) => violations.extend(e.violations),
                }
            }
            transitions.push(TransitionRule {
                from: t.from,
                to: t.to,
                when,
                reason: t.reason,
            });
        }
        if !violations.is_empty() {
            return Err(Error::invalid_fields(violations));
        }
        Ok(LifecycleModel {
            display_name: self.display_name,
            template: self.template,
            stages: self
                .stages
                .into_iter()
                .map(|s| Stage {
                    key: s.key,
                    name: s.display_name,
                })
                .collect(),
            initial: self.initial,
            transitions,
            active: self.active,
        })
    }

    fn from_record(r: Record<LifecycleModel>) -> Self {
        let d = r.data;
        pb::LifecycleModel {
            name: name("lifecycleModels", Some(r.meta.id)),
            display_name: d.display_name,
            template: d.template,
            stages: d
                .stages
                .into_iter()
                .map(|s| pb::LifecycleStage {
                    key: s.key,
                    display_name: s.name,
                })
                .collect(),
            initial: d.initial,
            transitions: d
                .transitions
                .into_iter()
                .map(|t| pb::LifecycleRule {
                    from: t.from,
                    to: t.to,
                    when: t.when.into_iter().map(condition_out).collect(),
                    reason: t.reason,
                })
                .collect(),
            active: d.active,
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

fn state_out(r: Record<LifecycleState>) -> pb::CustomerLifecycle {
    let d = r.data;
    pb::CustomerLifecycle {
        name: name("lifecycleStates", Some(r.meta.id)),
        customer: name("contacts", d.customer),
        model: name("lifecycleModels", d.model),
        stage: d.stage,
        enter_time: opt_ts(d.enter_time),
        evaluate_time: opt_ts(d.evaluate_time),
    }
}

fn transition_out(r: Record<LifecycleTransition>) -> pb::LifecycleTransition {
    let d = r.data;
    pb::LifecycleTransition {
        name: name("lifecycleTransitions", Some(r.meta.id)),
        customer: name("contacts", d.customer),
        model: name("lifecycleModels", d.model),
        from_stage: d.from_stage,
        to_stage: d.to_stage,
        reason: d.reason,
        rule: d.rule,
        transition_time: opt_ts(d.transition_time),
    }
}

impl Wire<Segment> for pb::Segment {
    const FIELD: &'static str = "segment";

    /// Output-only fields (member count, refresh time, operation) are not taken.
    fn into_domain(self) -> Result<Segment> {
        Ok(Segment {
            display_name: self.display_name,
            rule: self.rule,
            tag: self.tag,
            ..Default::default()
        })
    }

    fn from_record(r: Record<Segment>) -> Self {
        let d = r.data;
        pb::Segment {
            name: name("segments", Some(r.meta.id)),
            display_name: d.display_name,
            rule: d.rule,
            tag: d.tag,
            member_count: d.member_count,
            refresh_time: opt_ts(d.refresh_time),
            operation: d.operation,
            create_time: Some(ts(r.meta.create_time)),
            update_time: Some(ts(r.meta.update_time)),
            etag: r.meta.etag(),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn etag(&self) -> &str {
        &self.etag
    }
}

fn member_out(r: Record<SegmentMember>) -> pb::SegmentMember {
    let d = r.data;
    pb::SegmentMember {
        name: name("segmentMembers", Some(r.meta.id)),
        segment: name("segments", d.segment),
        customer: name("contacts", d.customer),
        enter_time: opt_ts(d.enter_time),
    }
}

fn ratio_out(r: crm_analytical::report::Ratio) -> pb::Ratio {
    pb::Ratio {
        numerator: i64::try_from(r.numerator).unwrap_or(i64::MAX),
        denominator: i64::try_from(r.denominator).unwrap_or(i64::MAX),
        rate: r.rate,
    }
}

/// The operation of a job just started (or found running).
async fn operation_of(ctx: &crm_core::service::Ctx, job: uuid::Uuid) -> Result<lro::Operation> {
    let job = crm_core::jobs::get(&ctx.db.conn, ctx.tenant(), job)
        .await?
        .ok_or_else(|| Error::internal("the operation's job vanished"))?;
    Ok(super::operations::operation(&job))
}

fn granularity_in(g: i32) -> Result<Granularity> {
    use pb::ReportGranularity as P;
    Ok(match P::try_from(g) {
        Ok(P::Day) => Granularity::Day,
        Ok(P::Week) => Granularity::Week,
        Ok(P::Unspecified | P::Month) => Granularity::Month,
        Ok(P::Quarter) => Granularity::Quarter,
        Ok(P::Year) => Granularity::Year,
        Err(_) => return Err(crate::convert::unknown_enum("granularity", g)),
    })
}

fn granularity_out(g: Granularity) -> i32 {
    use pb::ReportGranularity as P;
    (match g {
        Granularity::Day => P::Day,
        Granularity::Week => P::Week,
        Granularity::Month => P::Month,
        Granularity::Quarter => P::Quarter,
        Granularity::Year => P::Year,
    }) as i32
}

fn dimension_in(d: i32) -> Result<Dimension> {
    use pb::SalesDimension as P;
    Ok(match P::try_from(d) {
        Ok(P::Unspecified | P::Region) => Dimension::Region,
        Ok(P::Owner) => Dimension::Owner,
        Ok(P::Territory) => Dimension::Territory,
        Ok(P::Channel) => Dimension::Channel,
        Ok(P::ProductGroup) => Dimension::ProductGroup,
        Err(_) => return Err(crate::convert::unknown_enum("dimension", d)),
    })
}

fn chart_size(include: bool, width: i32, height: i32) -> Result<Option<chart::Size>> {
    if !include {
        return Ok(None);
    }
    let d = chart::Size::default();
    let side = |field: &str, v: i32, default: u32| -> Result<u32> {
        match v {
            0 => Ok(default),
            v => u32::try_from(v)
                .ok()
                .filter(|v| (chart::MIN_SIDE..=chart::MAX_SIDE).contains(v))
                .ok_or_else(|| {
                    Error::invalid(
                        field,
                        format!("must be within {}..={}", chart::MIN_SIDE, chart::MAX_SIDE),
                    )
                }),
        }
    };
    Ok(Some(chart::Size {
        width: side("chart_width", width, d.width)?,
        height: side("chart_height", height, d.height)?,
    }))
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// An optional `rfmRuns/{id}`.
fn run_ref(field: &str, run: &str) -> Result<Option<uuid::Uuid>> {
    reference(field, "rfmRuns", run.trim())
}

crate::service_impl!(AnalyticsService, Analytics, [
    RfmSettings => pb::RfmConfig {
        create_rfm_config(pb::CreateRfmConfigRequest, config),
        get_rfm_config(pb::GetRfmConfigRequest),
        list_rfm_configs(pb::ListRfmConfigsRequest => ListRfmConfigsResponse . configs),
        update_rfm_config(pb::UpdateRfmConfigRequest),
        delete_rfm_config(pb::DeleteRfmConfigRequest)
    },
    LifecycleModel => pb::LifecycleModel {
        create_lifecycle_model(pb::CreateLifecycleModelRequest, lifecycle_model),
        get_lifecycle_model(pb::GetLifecycleModelRequest),
        list_lifecycle_models(pb::ListLifecycleModelsRequest => ListLifecycleModelsResponse . lifecycle_models),
        update_lifecycle_model(pb::UpdateLifecycleModelRequest),
        delete_lifecycle_model(pb::DeleteLifecycleModelRequest)
    }
]
    async fn create_segment(
        &self,
        r: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        Ok(Response::new(super::create::<Segment, pb::Segment>(&ctx, r.segment, &r.request_id).await?))
    }

    async fn get_segment(
        &self,
        r: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let ctx = self.0.ctx(&r).await?;
        Ok(Response::new(super::get::<Segment, pb::Segment>(&ctx, &r.get_ref().name).await?))
    }

    async fn list_segments(
        &self,
        r: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<ListSegmentsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let (segments, next_page_token) = super::list::<Segment, pb::Segment>(&ctx, p).await?;
        Ok(Response::new(ListSegmentsResponse { segments, next_page_token }))
    }

    /// Like the other updates, but the fields refreshes write are refused in the mask.
    async fn update_segment(
        &self,
        r: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        if let Some(p) = r
            .update_mask
            .iter()
            .flat_map(|m| m.paths.iter())
            .find(|p| SEGMENT_OUTPUT_FIELDS.contains(&p.trim_start_matches("segment.")))
        {
            return Err(Error::invalid(
                "update_mask",
                format!("field {p:?} is output only"),
            ))
            .or_status();
        }
        Ok(Response::new(super::update::<Segment, pb::Segment>(&ctx, r.segment, r.update_mask).await?))
    }

    async fn delete_segment(
        &self,
        r: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = self.0.ctx(&r).await?;
        super::delete::<Segment, pb::Segment>(&ctx, &r.get_ref().name, &r.get_ref().etag).await?;
        Ok(Response::new(()))
    }

    async fn start_rfm_run(
        &self,
        r: Request<pb::StartRfmRunRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let req = StartRun {
            config: reference("config", "rfmConfigs", r.config.trim()).or_status()?,
            period_from: convert::from_ts("period_start_time", r.period_start_time).or_status()?,
            as_of: convert::from_ts("as_of_time", r.as_of_time).or_status()?,
        };
        let started = rfm_runs::start_run(&ctx, req).await.or_status()?;
        let job = crm_core::jobs::get(&ctx.db.conn, ctx.tenant(), started.job)
            .await
            .or_status()?
            .ok_or_else(|| Error::internal("the run's job vanished"))
            .or_status()?;
        Ok(Response::new(super::operations::operation(&job)))
    }

    async fn get_rfm_run(
        &self,
        r: Request<pb::GetRfmRunRequest>,
    ) -> Result<Response<pb::RfmRun>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = crm_core::ids::parse_name("name", "rfmRuns", r.get_ref().name.trim()).or_status()?;
        let run = ctx.get::<RfmRun>(id).await.or_status()?;
        Ok(Response::new(run_out(run)))
    }

    async fn list_rfm_runs(
        &self,
        r: Request<pb::ListRfmRunsRequest>,
    ) -> Result<Response<pb::ListRfmRunsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let p = super::params(r.page_size, r.page_token, r.filter, r.order_by);
        let page = ctx.list::<RfmRun>(&p).await.or_status()?;
        Ok(Response::new(pb::ListRfmRunsResponse {
            runs: page.items.into_iter().map(run_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_rfm_results(
        &self,
        r: Request<pb::ListRfmResultsRequest>,
    ) -> Result<Response<pb::ListRfmResultsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let run = run_ref("run", &r.run).or_status()?;
        let (run, page) = rfm_runs::list_results(&ctx, run, &r.segment, r.page_size, r.page_token)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListRfmResultsResponse {
            run: name("rfmRuns", Some(run.meta.id)),
            results: page.items.into_iter().map(result_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_customer_rfm(
        &self,
        r: Request<pb::GetCustomerRfmRequest>,
    ) -> Result<Response<pb::RfmResult>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let customer = crm_core::ids::parse_name("customer", "contacts", r.customer.trim()).or_status()?;
        let run = run_ref("run", &r.run).or_status()?;
        let (_, result) = rfm_runs::customer_result(&ctx, run, customer).await.or_status()?;
        Ok(Response::new(result_out(result)))
    }

    async fn sales_report(
        &self,
        r: Request<pb::SalesReportRequest>,
    ) -> Result<Response<pb::SalesReportResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let size = chart_size(r.include_chart, r.chart_width, r.chart_height).or_status()?;
        let from = convert::from_ts("start_time", r.start_time)
            .and_then(|t| convert::required("start_time", t))
            .or_status()?;
        let to = convert::from_ts("end_time", r.end_time)
            .and_then(|t| convert::required("end_time", t))
            .or_status()?;
        let q = SalesQuery {
            from,
            to,
            granularity: granularity_in(r.granularity).or_status()?,
            dimension: dimension_in(r.dimension).or_status()?,
            time_zone: r.time_zone,
        };
        let answer = sales::sales_report(&ctx, &q, size).await.or_status()?;
        let report = answer.report;
        Ok(Response::new(pb::SalesReportResponse {
            granularity: granularity_out(report.granularity),
            time_zone: report.time_zone,
            cells: report
                .cells
                .into_iter()
                .map(|c| pb::SalesCell {
                    period: c.period.label(),
                    period_start_date: convert::date(Some(c.period.start)),
                    dimension: c.dimension,
                    currency_code: c.currency,
                    amount_minor: saturate(c.amount),
                    orders: i64::try_from(c.orders).unwrap_or(i64::MAX),
                })
                .collect(),
            totals_minor: report
                .totals
                .into_iter()
                .map(|(k, v)| (k, saturate(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            charts: answer.charts.into_iter().collect(),
        }))
    }
    async fn evaluate_lifecycle(
        &self,
        r: Request<pb::EvaluateLifecycleRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let as_of = convert::from_ts("as_of_time", r.into_inner().as_of_time).or_status()?;
        let job = lifecycle::start_evaluation(&ctx, as_of).await.or_status()?;
        Ok(Response::new(operation_of(&ctx, job).await.or_status()?))
    }

    async fn get_customer_lifecycle(
        &self,
        r: Request<pb::GetCustomerLifecycleRequest>,
    ) -> Result<Response<pb::CustomerLifecycle>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let customer = crm_core::ids::parse_name("customer", "contacts", r.get_ref().customer.trim()).or_status()?;
        let state = lifecycle::customer_stage(&ctx, customer).await.or_status()?;
        Ok(Response::new(state_out(state)))
    }

    async fn list_lifecycle_transitions(
        &self,
        r: Request<pb::ListLifecycleTransitionsRequest>,
    ) -> Result<Response<pb::ListLifecycleTransitionsResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let customer = crm_core::ids::parse_name("customer", "contacts", r.customer.trim()).or_status()?;
        let page = lifecycle::customer_transitions(&ctx, customer, r.page_size, r.page_token)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListLifecycleTransitionsResponse {
            transitions: page.items.into_iter().map(transition_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn refresh_segment(
        &self,
        r: Request<pb::RefreshSegmentRequest>,
    ) -> Result<Response<lro::Operation>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let id = crm_core::ids::parse_name("name", "segments", r.get_ref().name.trim()).or_status()?;
        let refresh = segments::start_refresh(&ctx, id).await.or_status()?;
        Ok(Response::new(operation_of(&ctx, refresh.job).await.or_status()?))
    }

    async fn list_segment_members(
        &self,
        r: Request<pb::ListSegmentMembersRequest>,
    ) -> Result<Response<pb::ListSegmentMembersResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let id = crm_core::ids::parse_name("segment", "segments", r.segment.trim()).or_status()?;
        let page = segments::members(&ctx, id, r.page_size, r.page_token)
            .await
            .or_status()?;
        Ok(Response::new(pb::ListSegmentMembersResponse {
            members: page.items.into_iter().map(member_out).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn funnel_report(
        &self,
        r: Request<pb::FunnelReportRequest>,
    ) -> Result<Response<pb::FunnelReportResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let size = chart_size(r.include_chart, r.chart_width, r.chart_height).or_status()?;
        let q = FunnelQuery {
            model: reference("model", "lifecycleModels", r.model.trim()).or_status()?,
            stages: r.stages,
            cumulative: r.cumulative,
        };
        let answer = reports::funnel_report(&ctx, &q, size).await.or_status()?;
        Ok(Response::new(pb::FunnelReportResponse {
            model: name("lifecycleModels", Some(answer.model)),
            steps: answer
                .funnel
                .steps
                .into_iter()
                .map(|s| pb::FunnelStep {
                    stage: s.stage,
                    reached: i64::try_from(s.reached).unwrap_or(i64::MAX),
                    from_previous: s.from_previous.map(ratio_out),
                    from_first: Some(ratio_out(s.from_first)),
                })
                .collect(),
            unknown_stages: i64::try_from(answer.funnel.unknown_stages).unwrap_or(i64::MAX),
            chart: answer.chart.unwrap_or_default(),
        }))
    }

    async fn cohort_report(
        &self,
        r: Request<pb::CohortReportRequest>,
    ) -> Result<Response<pb::CohortReportResponse>, Status> {
        let ctx = self.0.ctx(&r).await?;
        let r = r.into_inner();
        let size = chart_size(r.include_chart, r.chart_width, r.chart_height).or_status()?;
        let q = CohortQuery {
            as_of: convert::from_ts("as_of_time", r.as_of_time).or_status()?,
            from: convert::from_ts("start_time", r.start_time).or_status()?,
            time_zone: r.time_zone,
        };
        let answer = reports::cohort_report(&ctx, &q, size).await.or_status()?;
        Ok(Response::new(pb::CohortReportResponse {
            time_zone: answer.matrix.time_zone.clone(),
            cohorts: answer
                .matrix
                .rows
                .iter()
                .map(|row| pb::Cohort {
                    cohort: row.cohort.label(),
                    cohort_start_date: convert::date(Some(row.cohort.start)),
                    size: i64::try_from(row.size).unwrap_or(i64::MAX),
                    active: row
                        .active
                        .iter()
                        .map(|a| i64::try_from(*a).unwrap_or(i64::MAX))
                        .collect(),
                    retention: (0..row.active.len())
                        .map(|k| row.rate(k).unwrap_or(0.0))
                        .collect(),
                })
                .collect(),
            chart: answer.chart.unwrap_or_default(),
        }))
    }
);
