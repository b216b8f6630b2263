//! What a run prints and writes: Markdown tables (req/s, p50/p99/p99.9,
//! ratios), CSV files, an SVG latency plot, and the targets: each ratio the
//! performance goals name, with whether it is met.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use plotters::prelude::*;

use crate::args::BenchArgs;
use crate::names::{
    ACTION_LOGIN, AUTH_CHECK, CANDIDATE, EDGE, HELLO, NGINX, PROXY, RAW, REDIS, REGENERATE,
};
use crate::results::{Logins, Measured};

/// The median of `values` (`NaN` when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Throughput of `a` over `b`: the median of the per-round ratios (each
/// round ran both side by side, so drift of the machine cancels out).
pub fn rate_ratio(a: &Measured, b: &Measured) -> f64 {
    let ratios: Vec<f64> = a
        .round_rates
        .iter()
        .zip(&b.round_rates)
        .map(|(x, y)| x / y)
        .collect();
    median(&ratios)
}

/// p50 of `a` over p50 of `b`.
pub fn p50_ratio(a: &Measured, b: &Measured) -> f64 {
    a.sample.micros(0.5) / b.sample.micros(0.5)
}

fn us(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.0}", x)
    } else if x >= 100.0 {
        format!("{:.1}", x)
    } else {
        format!("{:.2}", x)
    }
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}×")
    } else {
        "n/a".to_owned()
    }
}

/// A Markdown table of `rows`, each compared with the row of `reference`
/// at the same concurrency (throughput: median of round ratios).
pub fn table(unit: &str, rows: &[Measured], reference: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| target | c | {unit}/s | p50 µs | p99 µs | p99.9 µs | errors | {unit}/s ÷ {reference} | p50 ÷ {reference} |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.target == reference && r.concurrency == row.concurrency);
        let (rr, pr) = match base {
            Some(b) => (ratio(rate_ratio(row, b)), ratio(p50_ratio(row, b))),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        let s = &row.sample;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            row.target,
            row.concurrency,
            s.rate(),
            us(s.micros(0.5)),
            us(s.micros(0.99)),
            us(s.micros(0.999)),
            s.errors,
            rr,
            pr,
        );
    }
    out
}

/// CSV of `rows` (one line each), ratios against `reference` at the same
/// concurrency.
pub fn write_csv(
    path: &Path,
    scenario: &str,
    rows: &[Measured],
    reference: &str,
) -> anyhow::Result<()> {
    let mut out = String::from(
        "scenario,target,concurrency,ops,errors,seconds,ops_per_s,p50_us,p90_us,p99_us,p999_us,max_us,mean_us,reference,rate_ratio_to_reference,p50_ratio_to_reference\n",
    );
    for row in rows {
        let s = &row.sample;
        let base = rows
            .iter()
            .find(|r| r.target == reference && r.concurrency == row.concurrency);
        let (rr, pr) = base.map_or((f64::NAN, f64::NAN), |b| {
            (rate_ratio(row, b), p50_ratio(row, b))
        });
        let _ = writeln!(
            out,
            "{scenario},{},{},{},{},{:.3},{:.1},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{reference},{:.4},{:.4}",
            row.target,
            row.concurrency,
            s.ok(),
            s.errors,
            s.elapsed.as_secs_f64(),
            s.rate(),
            s.micros(0.5),
            s.micros(0.9),
            s.micros(0.99),
            s.micros(0.999),
            s.hist.max() as f64 / 1000.0,
            s.mean_micros(),
            rr,
            pr,
        );
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Latency by percentile (HdrHistogram style: the x axis in "nines"), one
/// panel per concurrency, one line per target.
pub fn plot(path: &Path, title: &str, rows: &[Measured]) -> anyhow::Result<()> {
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let mut levels: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
        levels.sort_unstable();
        levels.dedup();
        let mut targets: Vec<&str> = Vec::new();
        for r in rows {
            if !targets.contains(&r.target.as_str()) {
                targets.push(&r.target);
            }
        }
        let root =
            SVGBackend::new(path, (520 * levels.len().max(1) as u32, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(36);
        head.draw(&Text::new(
            title.to_owned(),
            (12, 10),
            ("sans-serif", 18).into_font(),
        ))?;
        let panels = body.split_evenly((1, levels.len().max(1)));
        // Up to 99.99 % where there are enough samples for it.
        let quantiles: Vec<f64> = (0..=400)
            .map(|i| 1.0 - 10f64.powf(-(i as f64) / 100.0))
            .collect();
        for (panel, c) in panels.iter().zip(&levels) {
            let lines: Vec<(usize, Vec<(f64, f64)>)> = rows
                .iter()
                .filter(|r| r.concurrency == *c && r.sample.ok() > 0)
                .map(|r| {
                    let top = 1.0 - 10.0 / r.sample.ok() as f64;
                    let points = quantiles
                        .iter()
                        .filter(|q| **q <= top.max(0.5))
                        .map(|q| (-(1.0 - q).log10(), r.sample.micros(*q).max(0.001)))
                        .collect();
                    let colour = targets.iter().position(|t| *t == r.target).unwrap_or(0);
                    (colour, points)
                })
                .collect();
            let ys = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
            let lo = ys.clone().fold(f64::INFINITY, f64::min).max(1.0);
            let hi = ys.fold(0.0, f64::max).max(lo * 2.0);
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("c = {c}"), ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..4f64, (lo / 1.5..hi * 1.5).log_scale())?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("latency (µs)")
                .x_labels(5)
                .x_label_formatter(&|x| match x.round() as i32 {
                    0 => "0".to_owned(),
                    1 => "90".to_owned(),
                    2 => "99".to_owned(),
                    3 => "99.9".to_owned(),
                    _ => "99.99".to_owned(),
                })
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()?;
            for (colour, points) in lines {
                let style = COLOURS[colour % COLOURS.len()];
                chart
                    .draw_series(LineSeries::new(points, style.stroke_width(2)))?
                    .label(targets[colour])
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], style.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    edge_session::rfc3339(secs)[..10].to_owned()
}

/// Cores and CPU model of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({cpu})")
}

/// Print the tables of a run and write its CSV files and plot under
/// `args.out` (created).
pub fn write(
    args: &BenchArgs,
    workers: usize,
    whoami: &[Measured],
    logins: &Logins,
    notes: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    println!();
    println!("## GET /whoami (hot cache), {} , {}", today(), machine());
    println!();
    print!("{}", table("req", whoami, HELLO));
    for note in notes {
        println!("\n{note}");
    }
    if !whoami.is_empty() {
        let csv = args.out.join("whoami.csv");
        write_csv(&csv, "GET /whoami", whoami, HELLO)?;
        let svg = args.out.join("whoami-latency.svg");
        plot(
            &svg,
            &format!(
                "GET /whoami latency by percentile ({}, {} cores, one run)",
                today(),
                workers
            ),
            whoami,
        )?;
        println!("\nwrote {} and {}", csv.display(), svg.display());
    }
    if !logins.rows.is_empty() {
        println!();
        println!("## Login: regenerate vs the raw TransactWriteItems");
        println!();
        print!("{}", table("ops", &logins.rows, RAW));
        println!();
        println!("| part of a login, c=1 | ops | p50 µs | p99 µs | mean µs |");
        println!("|---|---:|---:|---:|---:|");
        for (name, s) in &logins.parts {
            println!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} |",
                s.ok(),
                s.micros(0.5),
                s.micros(0.99),
                s.mean_micros()
            );
        }
        let csv = args.out.join("login.csv");
        write_csv(&csv, "login", &logins.rows, RAW)?;
        println!("\nwrote {}", csv.display());
    }
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// The row of `target` at concurrency `c`.
fn find(rows: &[Measured], target: &str, c: usize) -> Option<Measured> {
    rows.iter()
        .find(|m| m.target == target && m.concurrency == c)
        .cloned()
}

/// Print the performance targets (docs/performance.md) with the ratios of
/// this run and whether each is met.
pub fn targets(args: &BenchArgs, whoami: &[Measured], logins: &[Measured]) {
    println!();
    println!("## Targets");
    let top = args.concurrency.iter().copied().max().unwrap_or(64);
    if let (Some(e), Some(h)) = (find(whoami, EDGE, top), find(whoami, HELLO, top)) {
        let r = rate_ratio(&e, &h);
        println!(
            "- GET /whoami c={top}: edge-session {r:.2}× the hello-world ceiling's req/s (target ≥ 0.90): {}",
            verdict(r >= 0.90)
        );
        if let Some(p) = find(whoami, REDIS, top) {
            println!(
                "- GET /whoami c={top}: edge-session {:.2}× actix-session+redis's req/s; actix-session+redis {:.2}× the ceiling",
                rate_ratio(&e, &p),
                rate_ratio(&p, &h)
            );
        }
    }
    for c in &args.concurrency {
        if let (Some(e), Some(k), Some(h)) = (
            find(whoami, EDGE, *c),
            find(whoami, CANDIDATE, *c),
            find(whoami, HELLO, *c),
        ) {
            println!(
                "- GET /whoami c={c}: candidate {:.2}× edge-session's req/s, p50 {:.2}×; candidate {:.2}× the ceiling's req/s, p50 {:.2}× the ceiling's",
                rate_ratio(&k, &e),
                p50_ratio(&k, &e),
                rate_ratio(&k, &h),
                p50_ratio(&k, &h)
            );
        }
    }
    let low = args.concurrency.iter().copied().min().unwrap_or(1);
    if let (Some(e), Some(h)) = (find(whoami, EDGE, low), find(whoami, HELLO, low)) {
        let r = p50_ratio(&e, &h);
        println!(
            "- GET /whoami c={low}: edge-session p50 {r:.2}× the ceiling's p50 (target ≤ 1.10): {}",
            verdict(r <= 1.10)
        );
        if let Some(p) = find(whoami, REDIS, low) {
            println!(
                "- GET /whoami c={low}: edge-session p50 {:.2}× actix-session+redis's p50",
                p50_ratio(&e, &p)
            );
        }
    }
    gateway_targets(args, whoami);
    for c in &args.login_concurrency {
        if let (Some(a), Some(g)) = (find(logins, ACTION_LOGIN, *c), find(logins, REGENERATE, *c)) {
            println!(
                "- login c={c}: through a signed action on the proxy, {:.2}× TieredStore::regenerate's time per op (median of round ratios; p50 {:.2}×)",
                1.0 / rate_ratio(&a, &g),
                p50_ratio(&a, &g)
            );
        }
        if let (Some(g), Some(r)) = (find(logins, REGENERATE, *c), find(logins, RAW, *c)) {
            // Time per login over time per raw transaction: the inverse of
            // the throughput ratio, median over rounds.
            let per_op = 1.0 / rate_ratio(&g, &r);
            // At most 1.25× with one login at a time, 1.10× at c ≥ 8.
            let target = if *c <= 1 { 1.25 } else { 1.10 };
            println!(
                "- login c={c}: regenerate takes {per_op:.2}× the raw transaction's time per op (median of {} round ratios; p50 {:.2}×) (target ≤ {target:.2}): {}",
                g.round_rates.len(),
                p50_ratio(&g, &r),
                verdict(per_op <= target)
            );
        }
    }
}

/// The gateway's targets (docs/performance.md, "Gateway").
fn gateway_targets(args: &BenchArgs, whoami: &[Measured]) {
    let top = args.concurrency.iter().copied().max().unwrap_or(64);
    let low = args.concurrency.iter().copied().min().unwrap_or(1);
    if let (Some(a), Some(h)) = (find(whoami, AUTH_CHECK, top), find(whoami, HELLO, top)) {
        let r = rate_ratio(&a, &h);
        println!(
            "- GET /auth/check c={top}: {r:.2}× the hello-world ceiling's req/s (target ≥ 0.85): {}",
            verdict(r >= 0.85)
        );
    }
    if let (Some(p), Some(h)) = (find(whoami, PROXY, top), find(whoami, HELLO, top)) {
        println!(
            "- proxy c={top}: {:.2}× the upstream served directly's req/s",
            rate_ratio(&p, &h)
        );
        if let Some(n) = find(whoami, NGINX, top) {
            let r = rate_ratio(&p, &n);
            println!(
                "- proxy c={top}: {r:.2}× nginx proxy_pass + auth_request's req/s (target ≥ 1.2): {}",
                verdict(r >= 1.2)
            );
        }
    }
    if let (Some(p), Some(h)) = (find(whoami, PROXY, low), find(whoami, HELLO, low)) {
        let r = p50_ratio(&p, &h);
        println!(
            "- proxy c={low}: p50 {r:.2}× the upstream served directly's p50 (target ≤ 1.3): {}; added {:.1} µs",
            verdict(r <= 1.3),
            p.sample.micros(0.5) - h.sample.micros(0.5)
        );
        if let Some(n) = find(whoami, NGINX, low) {
            println!(
                "- proxy c={low}: p50 {:.2}× nginx + auth_request's p50; nginx added {:.1} µs over direct",
                p50_ratio(&p, &n),
                n.sample.micros(0.5) - h.sample.micros(0.5)
            );
        }
    }
}

/// Target mode's results: a table with p50/p90/p99/p99.9/max, and
/// `target.csv`, `target.json`, `target-latency.svg` under `args.out`.
pub fn write_target(args: &BenchArgs, url: &str, rows: &[Measured]) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let quantiles = [0.5, 0.9, 0.99, 0.999, 1.0];
    println!();
    println!("## {url}, {}, {}", today(), machine());
    println!();
    println!("| scenario | c | ops/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut csv = String::from(
        "scenario,concurrency,ops_per_sec,p50_us,p90_us,p99_us,p999_us,max_us,errors\n",
    );
    let mut json = Vec::new();
    for r in rows {
        let s = &r.sample;
        let q: Vec<f64> = quantiles.iter().map(|q| s.micros(*q)).collect();
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.target,
            r.concurrency,
            s.rate(),
            us(q[0]),
            us(q[1]),
            us(q[2]),
            us(q[3]),
            us(q[4]),
            s.errors
        );
        let _ = writeln!(
            csv,
            "{},{},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{}",
            r.target,
            r.concurrency,
            s.rate(),
            q[0],
            q[1],
            q[2],
            q[3],
            q[4],
            s.errors
        );
        json.push(serde_json::json!({
            "scenario": r.target, "concurrency": r.concurrency, "ops_per_sec": s.rate(),
            "p50_us": q[0], "p90_us": q[1], "p99_us": q[2], "p999_us": q[3], "max_us": q[4],
            "errors": s.errors, "round_rates": r.round_rates,
        }));
    }
    let doc = serde_json::json!({ "target": url, "date": today(), "machine": machine(), "results": json });
    let (csv_path, json_path, svg) = (
        args.out.join("target.csv"),
        args.out.join("target.json"),
        args.out.join("target-latency.svg"),
    );
    std::fs::write(&csv_path, csv)?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)?)?;
    plot(
        &svg,
        &format!("{url}: latency by percentile ({})", today()),
        rows,
    )?;
    println!(
        "\nwrote {}, {} and {}",
        csv_path.display(),
        json_path.display(),
        svg.display()
    );
    Ok(())
}
