//! The soak's report: Markdown with a row per run, and the PNG plots of
//! each counter's rate over time.

use std::path::PathBuf;

use serde::Serialize;

use crate::soak_run::{Counters, RunReport};

#[derive(Clone, Debug, Serialize)]
pub struct ReportHeader {
    pub accel: String,
    pub seconds: u64,
    pub smp: String,
    pub strategy: String,
    pub append: String,
    pub jobs: usize,
    pub host: String,
    pub wall_s: f64,
}

/// "10 min" or "45 s".
pub(super) fn duration(secs: u64) -> String {
    if secs.is_multiple_of(60) { format!("{} min", secs / 60) } else { format!("{secs} s") }
}

/// The Markdown report: one row per model, then the failed runs' logs.
pub fn report_md(h: &ReportHeader, runs: &[RunReport], plots: &[(String, std::result::Result<PathBuf, String>)]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let passed = runs.iter().filter(|r| r.passed).count();
    let _ = writeln!(s, "# Soak report\n");
    let _ = writeln!(
        s,
        "{} of {} runs passed. {} per model, `--smp {}`, strategy `{}`, accelerator {}, {} runs at a time on {} (wall {:.0} s).{}\n",
        passed,
        runs.len(),
        duration(h.seconds),
        h.smp,
        h.strategy,
        h.accel,
        h.jobs,
        h.host,
        h.wall_s,
        if h.append.trim().is_empty() { String::new() } else { format!(" Extra command line: `{}`.", h.append.trim()) }
    );
    let _ = writeln!(
        s,
        "| model | guest CPU | CPUs | APIC | clock | watchdog | NMIs | NMIs/s/CPU | unknown NMIs | swallowed | patch cycles | sync rounds | int3 emulations | torn | lockups | NMI-context warnings | events | lost | result |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let (m, c) = (r.machine.clone().unwrap_or_default(), r.last.clone().unwrap_or_default());
        let rate = if c.uptime_s > 0.0 && m.cpus > 0 { c.nmis as f64 / c.uptime_s / m.cpus as f64 } else { 0.0 };
        let result = match &r.failure {
            None => "passed".to_string(),
            Some(f) => format!("**FAILED**: {}", f.replace('|', "\\|")),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} {:.1} MHz | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model,
            m.cpu_brand,
            m.cpus,
            m.apic,
            m.clock,
            m.tsc_mhz,
            m.watchdog,
            c.nmis,
            rate,
            c.unknown_nmis,
            c.swallowed_nmis,
            c.patch_cycles,
            c.sync_rounds,
            c.int3_emulations,
            c.torn,
            c.lockups,
            c.nmi_warnings,
            c.events,
            c.lost,
            result
        );
    }
    let _ = writeln!(s);
    for (name, p) in plots {
        match p {
            Ok(path) => {
                let _ = writeln!(s, "![{name}]({})\n", path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default());
            }
            Err(e) => {
                let _ = writeln!(s, "Plot `{name}` not drawn: {e}\n");
            }
        }
    }
    let failed: Vec<&RunReport> = runs.iter().filter(|r| !r.passed).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "## Failed runs\n");
        for r in failed {
            let tail: Vec<String> = std::fs::read_to_string(&r.serial_log).unwrap_or_default().lines().rev().take(60).map(str::to_string).collect();
            let _ = writeln!(s, "### {}\n\n{}\n\nSerial log: `{}` (last lines):\n", r.model, r.failure.as_deref().unwrap_or(""), r.serial_log.display());
            let _ = writeln!(s, "```text");
            for l in tail.iter().rev() {
                let _ = writeln!(s, "{l}");
            }
            let _ = writeln!(s, "```\n");
        }
    }
    s
}

pub(super) mod plot {
    //! PNG plots of the soak: one per metric, one line per model, rate per
    //! second against minutes of uptime (plotters, with the DejaVu font
    //! from the system since plotters draws text through ab_glyph).

    use std::path::{Path, PathBuf};

    use plotters::prelude::*;

    use super::{Counters, RunReport};

    const FONT: &[&str] = &["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];

    type Metric = (&'static str, &'static str, fn(&Counters) -> u64);

    const METRICS: &[Metric] = &[
        ("nmi_rate", "NMIs per second (all CPUs)", |c| c.nmis),
        ("int3_rate", "int3 emulations per second", |c| c.int3_emulations),
        ("cycle_rate", "patch cycles per minute", |c| c.patch_cycles),
        ("event_rate", "trace events per second", |c| c.events),
    ];

    fn font() -> Result<(), String> {
        static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        DONE.get_or_init(|| {
            let path = FONT.iter().find(|p| Path::new(p).exists()).ok_or("no DejaVu Sans font (install fonts-dejavu-core)")?;
            let bytes: &'static [u8] = Box::leak(std::fs::read(path).map_err(|e| e.to_string())?.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path}: not a usable font"))
        })
        .clone()
    }

    /// Rates between consecutive samples: (minutes, per second, or per minute for cycles).
    pub fn rates(samples: &[(f64, Counters)], f: fn(&Counters) -> u64, per: f64) -> Vec<(f64, f64)> {
        samples
            .windows(2)
            .filter(|w| w[1].1.uptime_s > w[0].1.uptime_s)
            .map(|w| {
                let dt = w[1].1.uptime_s - w[0].1.uptime_s;
                (w[1].1.uptime_s / 60.0, f(&w[1].1).saturating_sub(f(&w[0].1)) as f64 / dt * per)
            })
            .collect()
    }

    pub fn write_all(dir: &Path, runs: &[RunReport]) -> Vec<(String, Result<PathBuf, String>)> {
        METRICS
            .iter()
            .map(|(name, title, f)| {
                let per = if *name == "cycle_rate" { 60.0 } else { 1.0 };
                let path = dir.join(format!("{name}.png"));
                (name.to_string(), font().and_then(|_| draw(&path, title, runs, *f, per).map(|_| path)))
            })
            .collect()
    }

    fn draw(path: &Path, title: &str, runs: &[RunReport], f: fn(&Counters) -> u64, per: f64) -> Result<(), String> {
        let series: Vec<(String, Vec<(f64, f64)>)> = runs.iter().map(|r| (r.model.clone(), rates(&r.samples, f, per))).collect();
        let xmax = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0f64, f64::max);
        let ymax = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
        let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|x| e(&x))?;
        chart.configure_mesh().x_desc("minutes of uptime").draw().map_err(|x| e(&x))?;
        for (i, (model, pts)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).stroke_width(2);
            chart
                .draw_series(LineSeries::new(pts, color))
                .map_err(|x| e(&x))?
                .label(model)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], Palette99::pick(i).stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
        Ok(())
    }
}
