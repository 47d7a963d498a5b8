//! Invoices through the API: usage intervals from the store (one per task
//! per attempt, written in the same transaction as the state change that
//! starts or ends them), priced by the server's price book
//! ([`suanli_billing`]). A tenant sees only its own invoice. The economics
//! report (admin) adds capacity from the node history (`node_spans`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use suanli_api::{BillQuery, Bills, EconomicsQuery, EconomicsReport};
use suanli_billing::{
    add_tokens, economics_with_services, invoices, parse_month, PriceBook, TokenUse,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::Problem;
use super::state::AppState;
use crate::store::{now_ms, Scope};
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(bills))
        .routes(routes!(economics_report))
}

/// Invoices for a month: the caller's own (tenant), or every tenant's or
/// one's (admin).
#[utoipa::path(get, path = "/v1/bills", tag = "bills", params(BillQuery), security(("bearer" = [])),
    responses((status = 200, description = "Invoices: line items by resource, GPU model and class; total", body = Bills),
        (status = 400, description = "Bad period", body = ProblemDoc),
        (status = 404, description = "No such tenant (admin's tenant=)", body = ProblemDoc),
        (status = 409, description = "No price book configured", body = ProblemDoc)))]
async fn bills(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<BillQuery>, QueryRejection>,
) -> Result<Json<Bills>, Problem> {
    let Query(q) = q.map_err(Problem::bad_query)?;
    let tenants: Vec<(i64, String)> = match (&c.0, &q.tenant) {
        (Scope::Tenant { id, name }, None) => vec![(*id, name.clone())],
        (Scope::Tenant { id, name }, Some(t)) if t == name => vec![(*id, name.clone())],
        (Scope::Tenant { .. }, Some(_)) => return Err(Problem::forbidden()),
        (Scope::Join | Scope::Node { .. } | Scope::Router, _) => return Err(Problem::forbidden()),
        (Scope::Admin, Some(t)) => {
            let t = st.store.tenant_by_name(t).await?;
            vec![(t.id, t.name)]
        }
        (Scope::Admin, None) => st
            .store
            .tenants()
            .await?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect(),
    };
    let (from, to) = parse_month(&q.period).map_err(|e| Problem::invalid("period", e))?;
    let book = price_book(&st)?;
    let scope = if tenants.len() == 1 {
        Some(tenants[0].0)
    } else {
        None
    };
    let usage = st.store.usage(scope, from, to).await?;
    let now = now_ms();
    let names: Vec<&str> = tenants.iter().map(|(_, n)| n.as_str()).collect();
    let mut invoices = invoices(&book, &names, &usage, from, to, now);
    let tokens = token_uses(&st, &book, scope, from, to.min(now + 1)).await?;
    for inv in &mut invoices {
        add_tokens(&book, inv, &tokens);
    }
    Ok(Json(Bills {
        currency: book.currency.clone(),
        period: q.period,
        from_ms: from,
        to_ms: to,
        invoices: invoices.iter().map(super::wire::invoice).collect(),
    }))
}

/// The operator's economics for a month (admin only): capacity GPU-hours by
/// model from the node history, sold GPU-hours, utilisation, revenue (the sum
/// of the invoices), idle capacity at list price.
#[utoipa::path(get, path = "/v1/reports/economics", tag = "bills", params(EconomicsQuery), security(("bearer" = [])),
    responses((status = 200, description = "Capacity, sold, utilisation, revenue and idle value by GPU model; every tenant's invoice", body = EconomicsReport),
        (status = 400, description = "Bad period", body = ProblemDoc),
        (status = 403, description = "Not an admin token", body = ProblemDoc),
        (status = 409, description = "No price book configured", body = ProblemDoc)))]
async fn economics_report(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<EconomicsQuery>, QueryRejection>,
) -> Result<Json<EconomicsReport>, Problem> {
    if !matches!(c.0, Scope::Admin) {
        return Err(Problem::forbidden());
    }
    let Query(q) = q.map_err(Problem::bad_query)?;
    let (from, to) = parse_month(&q.period).map_err(|e| Problem::invalid("period", e))?;
    let book = price_book(&st)?;
    let usage = st.store.usage(None, from, to).await?;
    let spans = st.store.node_spans(from, to).await?;
    let now = now_ms();
    let tokens = token_uses(&st, &book, None, from, to.min(now + 1)).await?;
    let replicas = st
        .store
        .services()
        .replica_models(from, to)
        .await?
        .into_iter()
        .collect();
    let e = economics_with_services(&book, &spans, &usage, &tokens, &replicas, from, to, now);
    Ok(Json(super::wire::economics(q.period, now, &e)))
}

/// Tokens bought in [from, to) per tenant and model, one row per price
/// period (so each is priced by the period it fell in).
async fn token_uses(
    st: &AppState,
    book: &PriceBook,
    scope: Option<i64>,
    from: i64,
    to: i64,
) -> Result<Vec<TokenUse>, Problem> {
    let mut out = Vec::new();
    if to <= from {
        return Ok(out);
    }
    for (a, b, _) in book.segments(from, to) {
        for r in st.store.services().token_sums(scope, a, b).await? {
            let n = |v: i64| v.max(0) as u64;
            out.push(TokenUse {
                tenant: r.tenant,
                model: r.model,
                at: a,
                requests: n(r.requests),
                input: n(r.input_tokens),
                output: n(r.output_tokens),
            });
        }
    }
    Ok(out)
}

fn price_book(st: &AppState) -> Result<Arc<PriceBook>, Problem> {
    st.prices.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "no_price_book",
            "this server has no price book: start it with --prices FILE (or prices = \"FILE\" in its config)",
        )
    })
}
