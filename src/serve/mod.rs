//! `mnist-cnn serve`: an HTTP prediction API and a drawing page (axum on tokio).
//!
//! The weights are loaded once into a [`SharedModel`] (`Send` and `Sync`); each inference
//! worker thread makes its own instance of it, which reads the same values, and keeps its own
//! scratch buffers. The workers serve one bounded queue ([`batcher`]), each running one batched
//! forward pass for the requests that arrive together. An uploaded image is decoded and
//! prepared by the worker that takes it, in its batch; one over a megapixel (a photo) and a
//! large JSON body are read on tokio's blocking pool first ([`api`]). Counters for `/metrics`
//! are in [`metrics`].
//!
//! Endpoints: `GET /` (the drawing page), `POST /api/predict`, `GET /api/model`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`. The server keeps no state between requests besides its
//! counters, so replicas can run side by side behind a load balancer.

pub mod api;
pub mod batcher;
pub mod metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::Error;
use crate::nn::SharedModel;
use batcher::{BatchConfig, Batcher};

/// The page of `GET /`.
const PAGE: &str = include_str!("page.html");

/// How the server runs (the flags of `mnist-cnn serve`).
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The weights (safetensors) [default: the newest run's model, else the bundled one].
    pub model: Option<PathBuf>,
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Inference workers, each with its instance of the shared weights [default:
    /// [`default_workers`]].
    pub workers: Option<usize>,
    /// Kernel threads of each worker [default: 1].
    pub threads: Option<usize>,
    /// Batching and queue sizes.
    pub batch: BatchConfig,
    /// The largest request body (bytes).
    pub max_body_bytes: usize,
}

impl ServeConfig {
    /// The inference workers: `workers`, else [`default_workers`].
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(default_workers)
    }

    /// Each worker's kernel threads: `threads`, else 1.
    pub fn kernel_threads(&self) -> usize {
        self.threads.unwrap_or(1)
    }
}

/// What `GET /api/model` says about the loaded model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub architecture: String,
    pub parameters: usize,
    /// Metadata values that are numbers (test_accuracy, test_loss, ...).
    pub metrics: BTreeMap<String, f64>,
    pub dataset: String,
    pub classes: Vec<String>,
    /// The weights file, or "the bundled model".
    pub source: String,
    /// The weights file's metadata as it is.
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    fn of(m: &crate::runs::LoadedModel) -> Self {
        let meta = m.file.metadata.clone();
        let dataset = meta.get("dataset").map_or("mnist".into(), |d| d.to_lowercase());
        let mut classes = crate::data::download::class_names(&dataset);
        if classes.is_empty() {
            classes = (0..10).map(|d| d.to_string()).collect();
        }
        let metrics = meta
            .iter()
            .filter(|(k, _)| k.starts_with("test_") || k.starts_with("valid_") || k.starts_with("val_"))
            .filter_map(|(k, v)| Some((k.clone(), v.parse::<f64>().ok().filter(|x| x.is_finite())?)))
            .collect();
        ModelInfo {
            architecture: m.arch.name.to_string(),
            parameters: m.model.num_parameters(),
            metrics,
            dataset,
            classes,
            source: m.source.clone(),
            metadata: meta,
        }
    }
}

/// The inference workers when `--workers` is not given: one per core. The first takes every
/// batch; the others are spares that join only at a backlog (see [`batcher`]), so that they
/// use the cores inference and uploads need and leave alone those the HTTP handlers need. On
/// 2 cores (`bncnn`, 64 connections, alternating 4 s runs): JSON 22,324-22,351 requests/s
/// against 19,833-20,350 with 1 worker, PNG 8,747-8,827 against 5,333-5,369.
pub fn default_workers() -> usize {
    cores()
}

/// The cores this process may use (2 when that cannot be told).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What the handlers share.
pub struct App {
    pub batcher: Batcher,
    pub model: ModelInfo,
    pub metrics: metrics::Metrics,
    pub max_body_bytes: usize,
}

/// Loads the model, starts the inference workers, binds `cfg.addr`, calls `listening`
/// with the bound address, and serves until SIGTERM or Ctrl-C; in-flight requests finish
/// first. Errors: a model that cannot be loaded, an address that cannot be bound.
pub fn run(cfg: ServeConfig, listening: impl FnOnce(SocketAddr, &ModelInfo)) -> crate::Result<()> {
    if cfg.batch.queue == 0 || cfg.batch.max_batch == 0 {
        return Err(Error::settings("--queue and --max-batch must be at least 1"));
    }
    crate::tensor::pool::keep_freed_memory();
    let (workers, threads) = (cfg.workers(), cfg.kernel_threads());
    if workers == 0 || threads == 0 {
        return Err(Error::settings("--workers and --threads must be at least 1"));
    }
    let loaded = crate::runs::resolve_model(cfg.model.as_deref())?;
    let model = ModelInfo::of(&loaded);
    let shared = Arc::new(SharedModel::new(loaded.arch, loaded.model.as_ref()));
    drop(loaded);
    let (batcher, rx) = Batcher::new(&cfg.batch);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<crate::Result<()>>();
    let handles = (0..workers)
        .map(|i| {
            let (shared, rx, stats, ready_tx) = (shared.clone(), rx.clone(), batcher.stats.clone(), ready_tx.clone());
            let batch = cfg.batch;
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || {
                    let started = crate::cli::in_pool(Some(threads), || {
                        let model = shared.instance();
                        let started = || drop(ready_tx.send(Ok(())));
                        let role = batcher::Role::of(i);
                        batcher::run_loop(&rx, &batch, &stats, role, started, api::prepare_image, |x, n| {
                            let t = crate::tensor::Tensor::from_vec(x.to_vec(), &[n, batcher::PIXELS]);
                            let logits = crate::tensor::no_grad(|| model.forward(&t));
                            let c = logits.shape()[1];
                            crate::predict::softmax_rows(&logits.to_vec(), c)
                        });
                    });
                    if let Err(e) = started {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| Error::settings(format!("cannot start an inference worker: {e}")))
        })
        .collect::<crate::Result<Vec<_>>>()?;
    drop((ready_tx, rx));
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::settings("an inference worker could not start (see --threads)")),
        }
    }
    let app = Arc::new(App {
        batcher,
        model,
        metrics: metrics::Metrics::default(),
        max_body_bytes: cfg.max_body_bytes,
    });
    // Photos and large JSON bodies are read on the blocking pool: one thread a core, not
    // tokio's 512.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cores())
        .thread_name("serve")
        .build()
        .map_err(|e| Error::settings(format!("cannot start the server's runtime: {e}")))?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.addr)
            .await
            .map_err(|e| Error::settings(format!("cannot listen on {}: {e}", cfg.addr)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::settings(format!("cannot listen on {}: {e}", cfg.addr)))?;
        // The handlers are installed before the address is told, so a signal sent right after
        // it always shuts down gracefully.
        let stop = shutdown_signal()?;
        listening(addr, &app.model);
        axum::serve(listener, router(app))
            .with_graceful_shutdown(stop)
            .await
            .map_err(|e| Error::settings(format!("the server failed: {e}")))
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    // Every queue sender is gone with the router: the inference workers end.
    for h in handles {
        let _ = h.join();
    }
    served
}

/// The routes, with request counting.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/predict", post(api::predict))
        .route("/api/model", get(api::model))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { api::ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Counts each answer by status, with its latency; a 405 gets a JSON error too.
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let method = req.method().clone();
    // Every route takes one method: POST for /api/predict, GET for the others.
    let allowed = if req.uri().path() == "/api/predict" {
        "POST"
    } else {
        "GET"
    };
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        let msg = format!("{method} is not allowed here: use {allowed}");
        resp = api::ApiError::new(StatusCode::METHOD_NOT_ALLOWED, msg).into_response();
        resp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    }
    app.metrics.record(resp.status().as_u16(), t0.elapsed().as_secs_f64());
    resp
}

/// 200 once the model is loaded and an inference worker runs.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.batcher.stats.running.load(Ordering::SeqCst) > 0 {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        api::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no inference worker is running").into_response()
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(&app.batcher.stats),
    )
        .into_response()
}

/// A future that ends at SIGTERM or SIGINT (Ctrl-C); the handlers are installed now.
fn shutdown_signal() -> crate::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let err = |e: std::io::Error| Error::settings(format!("cannot handle signals: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(err)?;
        let mut int = signal(SignalKind::interrupt()).map_err(err)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            eprintln!("shutting down: finishing the requests in flight");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down: finishing the requests in flight");
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn workers_get_one_per_core() {
        let cores = super::cores();
        let t = super::default_workers();
        assert!(t >= 1, "{t} of {cores}");
        assert_eq!(t, cores);
    }
}
