//! The router: the API from its route table, the page, the sign-in routes, and the headers
//! every answer carries (a strict Content-Security-Policy, no framing, no caching, no sniffing).

use crate::state::AppState;
use crate::{api, openapi, pages};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

/// The Content-Security-Policy of every answer: only this origin's script and style (no
/// inline code), no plugins, no framing, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The whole app over `state`, with request bodies capped at `body_limit` bytes.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let mut api_routes = Router::new();
    for route in openapi::API_ROUTES {
        api_routes = api_routes.route(route.path, (route.handler)());
    }
    Router::new()
        .merge(api_routes)
        .route("/api/v1/openapi.json", get(api::openapi))
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
        .route("/static/app.js", get(pages::script))
        .route("/static/app.css", get(pages::style))
        .merge(state.auth.routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
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
