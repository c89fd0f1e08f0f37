//! An SVG chart of latency and server CPU against load: two panels side by side, x = packets
//! forwarded per second, one line per series. Written by hand (no plotting dependency): a few
//! dozen points need no more.

use crate::report::Report;
use std::fmt::Write;

/// One line: a name and its `(x, y)` points.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// The chart for a report: per run (sweep: one point per level; single run: its timeline).
pub fn for_report(report: &Report) -> String {
    let mut lat = Vec::new();
    let mut cpu = Vec::new();
    if report.runs.len() > 1 {
        let mut sizes: Vec<usize> = report
            .runs
            .iter()
            .map(|r| r.participants_per_room)
            .collect();
        sizes.dedup();
        for size in sizes {
            let runs: Vec<_> = report
                .runs
                .iter()
                .filter(|r| r.participants_per_room == size)
                .collect();
            let pts = |f: &dyn Fn(&crate::report::RunReport) -> Option<f64>| -> Vec<(f64, f64)> {
                runs.iter()
                    .filter_map(|r| Some((r.forwarded_packets_per_s, f(r)?)))
                    .collect()
            };
            lat.push(Series {
                name: format!("{size}-person p50"),
                points: pts(&|r| Some(r.latency_ms.p50)),
            });
            lat.push(Series {
                name: format!("{size}-person p99"),
                points: pts(&|r| Some(r.latency_ms.p99)),
            });
            cpu.push(Series {
                name: format!("{size}-person"),
                points: pts(&|r| r.server_cpu_us_per_packet),
            });
        }
    } else if let Some(r) = report.runs.first() {
        let tl: Vec<_> = r
            .timeline
            .iter()
            .filter(|p| p.forwarded_pps > 0.0)
            .collect();
        lat.push(Series {
            name: "p50".into(),
            points: tl
                .iter()
                .map(|p| (p.forwarded_pps, p.latency_p50_ms))
                .collect(),
        });
        lat.push(Series {
            name: "p99".into(),
            points: tl
                .iter()
                .map(|p| (p.forwarded_pps, p.latency_p99_ms))
                .collect(),
        });
        cpu.push(Series {
            name: "server".into(),
            points: tl
                .iter()
                .filter_map(|p| Some((p.forwarded_pps, p.server_cpu_us_per_packet?)))
                .collect(),
        });
    }
    two_panels(
        &format!("confab-bench ({}, {} CPUs)", report.target, report.cpus),
        ("end-to-end latency (ms)", &lat),
        ("server CPU per forwarded packet (µs)", &cpu),
        "forwarded packets / s",
    )
}

/// Two line charts side by side sharing an x label.
pub fn two_panels(
    title: &str,
    left: (&str, &[Series]),
    right: (&str, &[Series]),
    x_label: &str,
) -> String {
    let (w, h) = (1000.0, 420.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    panel(&mut s, 60.0, 50.0, 400.0, 300.0, left.0, left.1, x_label);
    panel(&mut s, 560.0, 50.0, 400.0, 300.0, right.0, right.1, x_label);
    s.push_str("</svg>\n");
    s
}

#[allow(clippy::too_many_arguments)]
fn panel(
    s: &mut String,
    x0: f64,
    y0: f64,
    pw: f64,
    ph: f64,
    y_label: &str,
    series: &[Series],
    x_label: &str,
) {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|l| l.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let xmax = nice(all.iter().map(|p| p.0).fold(0.0, f64::max));
    let ymax = nice(all.iter().map(|p| p.1).fold(0.0, f64::max));
    let px = |x: f64| x0 + x / xmax * pw;
    let py = |y: f64| y0 + ph - y / ymax * ph;
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (gx, gy) = (x0 + f * pw, y0 + ph - f * ph);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{gy}" x2="{}" y2="{gy}" stroke="#eee"/>"##,
            x0 + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            x0 - 4.0,
            gy + 4.0,
            fmt(f * ymax)
        );
        let _ = writeln!(
            s,
            r#"<text x="{gx}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + ph + 16.0,
            fmt(f * xmax)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 34.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="{}" >{}</text>"#,
        y0 - 8.0,
        esc(y_label)
    );
    for (i, l) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<String> = l
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = y0 + ph + 52.0 + (i / 3) as f64 * 16.0;
        let lx = x0 + (i % 3) as f64 * 135.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="4" fill="{color}"/>"#,
            ly - 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}">{}</text>"#,
            lx + 16.0,
            esc(&l.name)
        );
    }
}

/// A round axis maximum at or above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_well_formed_svg_with_one_line_per_series() {
        let a = [Series {
            name: "p99".into(),
            points: vec![(100.0, 1.0), (200.0, 2.0)],
        }];
        let b = [Series {
            name: "cpu".into(),
            points: vec![(100.0, 3.0)],
        }];
        let svg = two_panels("t", ("lat", &a), ("cpu", &b), "x");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(nice(7.3), 10.0);
        assert_eq!(nice(0.0), 1.0);
    }
}
