//! Import benchmark (`cargo bench --bench import`): a 2 GiB qcow2 (64 MiB of data spread
//! over it, the rest unallocated) served by a loopback HTTP server, imported by monovirt's
//! pipeline (HTTP stream → scratch → `qemu-img convert` → sparse raw `disk.img`) against
//! the shell baseline `curl -o scratch URL && qemu-img convert -O raw scratch out && sync
//! out dir` in the same run. `qemu-img` cannot read a qcow2 from a pipe (it seeks), so the
//! baseline, like the importer, downloads first.
//!
//! Like with like: the same image from the same server, both written to the same file
//! system (one temporary folder), both ending as a raw sparse file of the volume's size
//! (the image's virtual size, 2 GiB) with the same content (compared), and both durable:
//! monovirt flushes the image and its folder before it reports success (a volume must
//! survive a crash once it says Succeeded), so the baseline ends with `sync` of its output
//! and folder. The table also shows the baseline without that `sync`, for the cost of
//! durability.
//!
//! Prints min/median/max per method and the median ratio baseline/monovirt (≥ 1: monovirt
//! is as fast or faster), and the load average. `MONOVIRT_BENCH_RUNS` sets the run count
//! (default 5). A benchmark measures; nothing here asserts a speed.

use anyhow::{ensure, Context, Result};
use axum::body::Body;
use axum::extract::{Path as AxPath, State};
use axum::response::{IntoResponse, Response};
use monovirt::storage::import::{self, Progress, Target};
use monovirt::storage::source::HttpSource;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: u64 = 2 << 30;
const DATA_CHUNK: usize = 4 << 20;
const CHUNKS: u64 = 16;

async fn serve_file(State(dir): State<PathBuf>, AxPath(name): AxPath<String>) -> Response {
    let Ok(f) = tokio::fs::File::open(dir.join(&name)).await else {
        return (axum::http::StatusCode::NOT_FOUND, "no").into_response();
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    Response::builder()
        .header(axum::http::header::CONTENT_LENGTH, len)
        .body(Body::from_stream(
            tokio_util::io::ReaderStream::with_capacity(f, 1 << 20),
        ))
        .expect("response")
}

fn make_image(dir: &Path) -> Result<PathBuf> {
    let raw = dir.join("src.raw");
    let mut f = std::fs::File::create(&raw)?;
    f.set_len(SIZE)?;
    let mut x: u32 = 12345;
    let chunk: Vec<u8> = (0..DATA_CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    for i in 0..CHUNKS {
        f.seek(SeekFrom::Start(i * (SIZE / CHUNKS)))?;
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let q = dir.join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .status()
        .context("qemu-img")?;
    ensure!(st.success(), "qemu-img convert failed");
    std::fs::remove_file(&raw)?;
    Ok(q)
}

async fn monovirt_import(url: &str, dir: &Path) -> Result<Duration> {
    let target = Target {
        dir: dir.to_path_buf(),
        capacity: SIZE,
    };
    let start = Instant::now();
    let opened = HttpSource {
        url: url.to_string(),
        ..HttpSource::default()
    }
    .open()
    .await?;
    let progress = Arc::new(Progress::default());
    progress.set_total(opened.length);
    import::import(opened.body, &target, None, progress).await?;
    Ok(start.elapsed())
}

/// The baseline's time without and with flushing its output and folder (`sync FILE DIR`).
fn baseline(url: &str, dir: &Path) -> Result<(Duration, Duration)> {
    let scratch = dir.join("scratch.qcow2");
    let out = dir.join("out.raw");
    let start = Instant::now();
    let st = Command::new("curl")
        .args(["-sSf", "-o"])
        .arg(&scratch)
        .arg(url)
        .status()
        .context("curl")?;
    ensure!(st.success(), "curl failed");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&scratch)
        .arg(&out)
        .status()
        .context("qemu-img")?;
    ensure!(st.success(), "qemu-img convert failed");
    // The importer deletes its scratch download too.
    std::fs::remove_file(&scratch)?;
    let converted = start.elapsed();
    let st = Command::new("sync")
        .arg(&out)
        .arg(dir)
        .status()
        .context("sync")?;
    ensure!(st.success(), "sync failed");
    let durable = start.elapsed();
    Ok((converted, durable))
}

/// Whether raw images `a` and `b` are the same: length, content, and (within 1 MiB of
/// metadata) the blocks they take.
fn same(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    let blocks = |m: &std::fs::Metadata| std::os::unix::fs::MetadataExt::blocks(m) * 512;
    if ma.len() != SIZE || mb.len() != SIZE || blocks(&ma).abs_diff(blocks(&mb)) > 1 << 20 {
        return Ok(false);
    }
    let st = Command::new("cmp").arg("-s").arg(a).arg(b).status()?;
    Ok(st.success())
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn stats(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() -> Result<()> {
    let runs: usize = std::env::var("MONOVIRT_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let work = tempfile::tempdir()?;
    let images = work.path().join("images");
    std::fs::create_dir(&images)?;
    let q = make_image(&images)?;
    let qlen = std::fs::metadata(&q)?.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(serve_file))
        .with_state(images.clone());
    rt.spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/disk.qcow2");
    let load_before = load_average();
    let mut ours = Vec::new();
    let mut base_nosync = Vec::new();
    let mut base = Vec::new();
    for i in 0..runs {
        let a = work.path().join(format!("ours-{i}"));
        let b = work.path().join(format!("base-{i}"));
        std::fs::create_dir(&a)?;
        std::fs::create_dir(&b)?;
        // Alternate the order so neither always runs with warmer caches.
        if i % 2 == 0 {
            ours.push(rt.block_on(monovirt_import(&url, &a))?);
            let (t, s) = baseline(&url, &b)?;
            base_nosync.push(t);
            base.push(s);
        } else {
            let (t, s) = baseline(&url, &b)?;
            base_nosync.push(t);
            base.push(s);
            ours.push(rt.block_on(monovirt_import(&url, &a))?);
        }
        ensure!(
            same(&a.join("disk.img"), &b.join("out.raw"))?,
            "the two imports differ"
        );
        std::fs::remove_dir_all(&a)?;
        std::fs::remove_dir_all(&b)?;
    }
    let (omin, omed, omax) = stats(&mut ours);
    let (bmin, bmed, bmax) = stats(&mut base);
    let (nmin, nmed, nmax) = stats(&mut base_nosync);
    println!(
        "import of a {} GiB qcow2 ({} MiB file, {} MiB of data) over loopback HTTP, {runs} runs, \
         load average {load_before} before, {} after",
        SIZE >> 30,
        qlen >> 20,
        (DATA_CHUNK as u64 * CHUNKS) >> 20,
        load_average()
    );
    println!("| method | min | median | max |");
    println!("| --- | --- | --- | --- |");
    println!("| monovirt import (stream → qemu-img convert → sparse raw, flushed) | {omin:.2?} | {omed:.2?} | {omax:.2?} |");
    println!("| curl -o scratch && qemu-img convert && sync out.raw dir | {bmin:.2?} | {bmed:.2?} | {bmax:.2?} |");
    println!("| (the baseline without the final sync: not durable) | {nmin:.2?} | {nmed:.2?} | {nmax:.2?} |");
    println!(
        "| ratio baseline/monovirt (median, both durable) | | {:.2} | |",
        bmed.as_secs_f64() / omed.as_secs_f64()
    );
    Ok(())
}
