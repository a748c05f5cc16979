//! The router: the API from its route table, the page, the sign-in routes, and the headers
//! every answer carries (a strict Content-Security-Policy, no framing, no caching, no sniffing).
//! Every route that authenticates or signs in is behind the per-address limit.

use crate::state::AppState;
use crate::{openapi, pages};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use std::net::SocketAddr;

/// The Content-Security-Policy of every answer: only this origin's script and style (no
/// inline code), no plugins, no framing, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The whole app over `state`, with request bodies capped at `body_limit` bytes.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let mut public = Router::new()
        .route("/static/app.js", get(pages::script))
        .route("/static/app.css", get(pages::style));
    let mut signed_in = Router::new();
    for route in openapi::API_ROUTES {
        if route.signed_in {
            signed_in = signed_in.route(route.path, (route.handler)());
        } else {
            public = public.route(route.path, (route.handler)());
        }
    }
    // Every route that authenticates its caller (or signs them in) is behind the address gate.
    let signed_in = signed_in
        .route("/", get(pages::home))
        .route(
            "/tasks/{id}",
            get(pages::task_page).post(pages::task_submit),
        )
        .route("/runs", get(pages::runs_page))
        .route("/approvals", get(pages::approvals_page))
        .route("/audit", get(pages::audit_page))
        .route("/runs/{id}", get(pages::run_page))
        .route("/runs/{id}/events", get(pages::run_events))
        .route("/runs/{id}/decide", post(pages::decide_submit))
        .route("/runs/{id}/{file}", get(pages::results_download))
        .merge(state.auth.routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            limit_by_address,
        ));
    Router::new()
        .merge(public)
        .merge(signed_in)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The per-address limit in front of authentication ([`crate::ratelimit`]). A request without
/// a peer address was not accepted from the network (an in-process test) and is not counted.
async fn limit_by_address(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(address) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
    else {
        return next.run(request).await;
    };
    let api = request.uri().path().starts_with("/api/");
    state
        .limiter
        .gate_address(address, api, next.run(request))
        .await
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}
