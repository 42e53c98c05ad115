//! The request timeout: a handler that has not answered within the bound
//! is dropped and the client gets a 503, so a stuck handler (or a client
//! trickling its body) cannot hold a connection and its task forever.

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

async fn within(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was not answered in time\n",
        )
            .into_response(),
    }
}

/// `app` with every route (body reading included) bounded by `limit`.
pub fn bounded(app: Router, limit: Duration) -> Router {
    app.layer(middleware::from_fn_with_state(limit, within))
}
