//! The method router: one route per declared method, registered with
//! `router.with(&state).on::<M>(handler)`.
//!
//! Everything generic about a request happens here, driven by the method's declaration
//! ([`molt_protocol::method::Method`]): unknown methods, the scope check, refusing
//! state-changing calls while the gateway stops, and replaying the first result for a
//! repeated `idempotencyKey`. A handler sees only typed params and returns a typed result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use molt_protocol::frame::{ErrorShape, RequestFrame, ResponseFrame, code};
use molt_protocol::method::{Method, MethodInfo};
use molt_protocol::scope::{self, Scope};
use serde_json::{Value, json};

use crate::app::{App, Lifecycle};

/// State-changing calls with the same idempotency key within this window return the first
/// result.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Who is calling: one authenticated connection, and the request being answered.
#[derive(Debug, Clone)]
pub struct Caller {
    pub conn_id: String,
    pub scopes: Vec<Scope>,
    /// The id of the request being answered.
    pub request_id: String,
    /// The connection's writer: a method that answers twice (`agent`) sends its later
    /// answer here, with the same request id.
    pub out: tokio::sync::mpsc::Sender<crate::app::Outbound>,
    /// Fired once the answer to this request is queued on the connection (see
    /// [`Caller::after_answer`]).
    pub answered: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
}

impl Caller {
    /// Resolves once this request's answer is queued, so a later answer on the same request
    /// id (`agent`'s final) can never overtake the first.
    pub fn after_answer(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.answered.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }
}

/// A handler of method `M` with state `S`: any `async fn(Arc<S>, Caller, M::Params) ->
/// Result<M::Result, ErrorShape>`.
pub trait Handler<S, M: Method>: Send + Sync + 'static {
    fn call(
        &self,
        state: Arc<S>,
        caller: Caller,
        params: M::Params,
    ) -> BoxFuture<'static, Result<M::Result, ErrorShape>>;
}

impl<S, M, F, Fut> Handler<S, M> for F
where
    M: Method,
    F: Fn(Arc<S>, Caller, M::Params) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<M::Result, ErrorShape>> + Send + 'static,
{
    fn call(
        &self,
        state: Arc<S>,
        caller: Caller,
        params: M::Params,
    ) -> BoxFuture<'static, Result<M::Result, ErrorShape>> {
        Box::pin(self(state, caller, params))
    }
}

type Erased =
    Box<dyn Fn(Caller, Value) -> BoxFuture<'static, Result<Value, ErrorShape>> + Send + Sync>;

struct Route {
    info: MethodInfo,
    handler: Erased,
}

/// Every method this gateway answers, in registration order.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    by_name: HashMap<&'static str, usize>,
}

/// Registers handlers that share one state.
pub struct Scoped<'r, S> {
    router: &'r mut Router,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> Scoped<'_, S> {
    /// Routes `M` to `handler`. Registering a method twice is a programming error.
    pub fn on<M: Method>(&mut self, handler: impl Handler<S, M>) -> &mut Self {
        let state = self.state.clone();
        let erased: Erased = Box::new(move |caller, raw| {
            let state = state.clone();
            let params = serde_json::from_value::<M::Params>(raw);
            let call = params.map(|p| handler.call(state, caller, p));
            Box::pin(async move {
                let result = call
                    .map_err(|e| ErrorShape::invalid(format!("invalid params: {e}")))?
                    .await?;
                serde_json::to_value(result).map_err(|e| {
                    ErrorShape::unavailable(format!("cannot encode the result: {e}"), 1000)
                })
            })
        });
        let index = self.router.routes.len();
        let previous = self.router.by_name.insert(M::NAME, index);
        debug_assert!(previous.is_none(), "{} is registered twice", M::NAME);
        self.router.routes.push(Route {
            info: MethodInfo::of::<M>(),
            handler: erased,
        });
        self
    }
}

impl Router {
    /// Starts registering handlers that take `state`.
    pub fn with<S>(&mut self, state: &Arc<S>) -> Scoped<'_, S> {
        Scoped {
            router: self,
            state: state.clone(),
        }
    }

    /// The methods this router answers (`features.methods`).
    pub fn methods(&self) -> impl Iterator<Item = &MethodInfo> {
        self.routes.iter().map(|r| &r.info)
    }

    /// Answers one request. The sender, if any, is to be fired once the answer is queued.
    pub async fn dispatch(
        &self,
        app: &App,
        caller: &Caller,
        req: RequestFrame,
    ) -> (ResponseFrame, Option<tokio::sync::oneshot::Sender<()>>) {
        let id = req.id.clone();
        let mut caller = caller.clone();
        caller.request_id = req.id.clone();
        caller.answered = Arc::new(std::sync::Mutex::new(None));
        let frame = match self.answer(app, &caller, req).await {
            Ok(v) => ResponseFrame::ok(id, v),
            Err(e) => ResponseFrame::err(id, e),
        };
        let then = caller
            .answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        (frame, then)
    }

    async fn answer(
        &self,
        app: &App,
        caller: &Caller,
        req: RequestFrame,
    ) -> Result<Value, ErrorShape> {
        let Some(route) = self
            .by_name
            .get(req.method.as_str())
            .map(|i| &self.routes[*i])
        else {
            return Err(
                ErrorShape::invalid(format!("unknown method {:?}", req.method))
                    .with_details(json!({ "method": req.method })),
            );
        };
        let info = route.info;
        if !scope::allows(&caller.scopes, info.scope) {
            return Err(ErrorShape::new(
                code::FORBIDDEN,
                format!("{} requires {}", info.name, info.scope.as_str()),
            )
            .with_details(json!({
                "code": "MISSING_SCOPE",
                "missingScope": info.scope.as_str(),
                "requiredScopes": [info.scope.as_str()],
            })));
        }
        if info.mutates && app.state() != Lifecycle::Serving {
            return Err(ErrorShape::unavailable(
                "the gateway is stopping; retry after it restarts",
                1000,
            )
            .with_details(json!({ "reason": "gateway-stopping" })));
        }
        let key = req
            .params
            .as_ref()
            .and_then(|p| p.get("idempotencyKey"))
            .and_then(Value::as_str)
            .filter(|_| info.replays)
            .map(str::to_owned);
        if let Some(k) = &key {
            let (m, k) = (info.name, k.clone());
            let stored = app
                .store
                .call(move |s| s.idempotent_result(m, &k, IDEMPOTENCY_WINDOW_MS))
                .await
                .map_err(crate::store_handle::to_error_shape)?;
            if let Some(v) = stored.and_then(|t| serde_json::from_str(&t).ok()) {
                return Ok(v);
            }
        }
        let params = req.params.unwrap_or_else(|| json!({}));
        let result = (route.handler)(caller.clone(), params).await?;
        if let Some(k) = key {
            let (m, text) = (info.name, result.to_string());
            if let Err(e) = app
                .store
                .call(move |s| s.remember_result(m, &k, &text))
                .await
            {
                tracing::warn!(error = %e, "cannot store idempotency result");
            }
        }
        Ok(result)
    }
}
