//! The worker's Prometheus endpoint: the recorder behind the `metrics` facade that the
//! library crates record through (names in `tsst_actors::metrics`), served over HTTP
//! from a thread of its own, so a busy actor thread never delays a scrape.
use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use tsst_actors::metrics::{self as names, BATCH_SECONDS, BATCH_SIZE, DECODE_STEP_SECONDS};

/// Where a worker serves its metrics unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9187";

/// Serves metrics as `--metrics` asks: `None` the default address (a port already
/// taken there is only warned about: a second worker on the host), `off` nothing, an
/// address there or fail. Returns the address served.
pub fn serve(arg: Option<&str>) -> Result<Option<SocketAddr>> {
    let explicit = arg.is_some();
    let arg = arg.unwrap_or(DEFAULT_ADDR);
    if arg == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = arg
        .parse()
        .with_context(|| format!("--metrics {arg}: not an address such as 127.0.0.1:9187"))?;
    match install(addr) {
        Ok(()) => Ok(Some(addr)),
        Err(e) if !explicit => {
            tracing::warn!(%addr, error = %format!("{e:#}"), "serving no metrics");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn install(addr: SocketAddr) -> Result<()> {
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        // Batches take milliseconds (scripted, CPU) to minutes (a 7B model's batch of 64).
        .set_buckets_for_metric(
            Matcher::Full(BATCH_SECONDS.into()),
            &[
                0.005, 0.02, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(BATCH_SIZE.into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )?
        // A 7B step's phases take tens of microseconds (binding) to tens of ms (the run).
        .set_buckets_for_metric(
            Matcher::Full(DECODE_STEP_SECONDS.into()),
            &[
                0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5,
            ],
        )?;
    // Outside any runtime, `install` binds here and serves from a thread of its own.
    std::thread::spawn(move || builder.install())
        .join()
        .map_err(|_| anyhow::anyhow!("the metrics exporter panicked"))?
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    names::describe();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!(names::WORKER_START).set(now);
    metrics::gauge!(names::WORKER_UP).set(1.0);
    Ok(())
}
