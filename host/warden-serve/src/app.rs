//! The router: the API from its route table, the page, the sign-in routes, and the headers
//! every answer carries (a strict Content-Security-Policy, no framing, no caching, no sniffing).
//! Every route that authenticates or signs in is behind the per-address limit.

use crate::auth::Auth;
use crate::state::AppState;
use crate::{openapi, pages};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use std::net::SocketAddr;

/// The Content-Security-Policy of every answer: only this origin's script and style (no
/// inline code), no plugins, no framing, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A route outside the API's table: its path and handler.
type PageRoute = (&'static str, fn() -> MethodRouter<AppState>);

/// The static files: public, not behind the address gate.
const STATIC_ROUTES: &[PageRoute] = &[
    ("/static/app.js", || get(pages::script)),
    ("/static/app.css", || get(pages::style)),
];

/// The page's routes (each authenticates its caller).
const PAGE_ROUTES: &[PageRoute] = &[
    ("/", || get(pages::home)),
    ("/tasks/{id}", || {
        get(pages::task_page).post(pages::task_submit)
    }),
    ("/runs", || get(pages::runs_page)),
    ("/approvals", || get(pages::approvals_page)),
    ("/audit", || get(pages::audit_page)),
    ("/runs/{id}", || get(pages::run_page)),
    ("/runs/{id}/events", || get(pages::run_events)),
    ("/runs/{id}/decide", || post(pages::decide_submit)),
    ("/runs/{id}/{file}", || get(pages::results_download)),
];

/// Every path the router serves: the API's table, the page's, the static files' and the
/// sign-in routes' (so a test can hold them against the OpenAPI document).
pub fn served_paths() -> Vec<&'static str> {
    openapi::API_ROUTES
        .iter()
        .map(|route| route.path)
        .chain(
            STATIC_ROUTES
                .iter()
                .chain(PAGE_ROUTES)
                .map(|(path, _)| *path),
        )
        .chain(Auth::ROUTE_PATHS)
        .collect()
}

/// The whole app over `state`, with request bodies capped at `body_limit` bytes.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let mut public = Router::new();
    for (path, handler) in STATIC_ROUTES {
        public = public.route(path, handler());
    }
    let mut signed_in = Router::new();
    for route in openapi::API_ROUTES {
        if route.signed_in {
            signed_in = signed_in.route(route.path, (route.handler)());
        } else {
            public = public.route(route.path, (route.handler)());
        }
    }
    for (path, handler) in PAGE_ROUTES {
        signed_in = signed_in.route(path, handler());
    }
    // Every route that authenticates its caller (or signs them in) is behind the address gate.
    let signed_in =
        signed_in
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
    let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
    else {
        return next.run(request).await;
    };
    let address = state.limiter.client_address(peer, request.headers());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/api/` path served anywhere (the page's and sign-in tables included) is in the
    /// OpenAPI document, and nothing else is.
    #[test]
    fn every_api_path_served_is_documented() {
        let document = openapi::document();
        let documented: std::collections::BTreeSet<&str> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let served: std::collections::BTreeSet<&str> = served_paths()
            .into_iter()
            .filter(|path| path.starts_with("/api/") || *path == "/api")
            .collect();
        assert_eq!(served, documented);
        assert!(
            served_paths().contains(&"/auth/callback"),
            "sign-in routes counted"
        );
    }
}
