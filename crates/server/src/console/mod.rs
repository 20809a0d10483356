//! The browser console at `/ui`: every query's health at a glance and one query's rows
//! changing live, for operators who would otherwise poll the JSON API with curl.
//!
//! The console is plain HTML, CSS and JavaScript compiled into the binary ([`assets`]): no
//! CDN, no framework, nothing fetched at build or install time. The pages call the same API
//! any client calls — `GET /ui/api/queries` ([`overview`]) for the queries page, the snapshot
//! and the SSE change feed for a query's rows, `DELETE /queries/{id}` and
//! `POST /queries/{id}/resume` for the admin actions — with the bearer token the operator types
//! in, so the console can do nothing its token could not do with curl.
//!
//! Two routers, because the static files and the API sit on different sides of the access
//! check: the files hold no data and must load before the operator has typed a token (the
//! page is what asks for it), so [`asset_routes`] is merged outside the guard; the overview
//! is data, so [`api_routes`] sits inside it with every other GET (read role).

pub mod assets;
pub mod overview;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// `GET /ui/api/queries`, behind the access check (read role). Its commit clock (when each
/// query's last commit was seen) lives as long as the router.
pub fn api_routes() -> Router<AppState> {
    let clock = Arc::new(overview::CommitClock::default());
    Router::new().route(
        overview::PATH,
        get(
            move |state: State<AppState>, params: Query<overview::Params>| {
                let clock = Arc::clone(&clock);
                async move { overview::queries(state, params, &clock).await }
            },
        ),
    )
}

/// `GET /ui`, `/ui/` and `/ui/{file}`: the console's files, open (see the module docs).
pub fn asset_routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/{file}", get(assets::file))
}
