//! What a bench run found, and its three renderings: `target/bench/report.json`, the Markdown block of
//! `docs/BENCHMARKS.md`, and the SVG chart of each endpoint against its floor. All written by hand: the
//! xtask has no serialisation or plotting dependency.

use std::fmt::Write as _;

use super::load::Load;

/// The machine the run measured.
#[derive(Debug, Default)]
pub struct Machine {
    /// `/proc/cpuinfo`'s model name.
    pub cpu: String,
    /// Cores the process may use.
    pub cores: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// `wrk -v`.
    pub wrk: String,
    /// fdatasync calls per second on the disk under `target/bench`, measured at the start.
    pub fsyncs_per_sec: f64,
}

/// One endpoint's throughput set against one of its floors.
#[derive(Debug)]
pub struct Comparison {
    /// The endpoint, as the table names it.
    pub endpoint: String,
    /// Its load.
    pub load: Load,
    /// Concurrent clients.
    pub clients: usize,
    /// The floor's name (`B`, `D_read`, ...).
    pub floor: String,
    /// The floor's rate.
    pub floor_rate: f64,
    /// The least acceptable `rate / floor_rate`.
    pub target: f64,
}

impl Comparison {
    /// `rate / floor_rate`.
    pub fn ratio(&self) -> f64 {
        if self.floor_rate > 0.0 {
            self.load.rate() / self.floor_rate
        } else {
            0.0
        }
    }

    /// Whether the ratio reaches the target.
    pub fn met(&self) -> bool {
        self.ratio() >= self.target
    }
}

/// A floor and how it was measured.
#[derive(Debug)]
pub struct Floor {
    /// `B`, `D_read`, `D_insert`, `D_rotate`, `H`.
    pub name: String,
    /// Operations per second.
    pub rate: f64,
    /// What it is, in words.
    pub what: String,
    /// Extra figures (p99, ms per hash, ...).
    pub detail: String,
}

/// A target that is not a throughput ratio: latency, errors, memory, growth, core ratios.
#[derive(Debug)]
pub struct Check {
    /// What is checked.
    pub what: String,
    /// The measured value, formatted.
    pub measured: String,
    /// The requirement, formatted.
    pub required: String,
    /// Whether it holds.
    pub met: bool,
}

/// Everything measured on one backend.
#[derive(Debug, Default)]
pub struct BackendReport {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// The `crm-auth bench describe` line: pool, workers, hashing, durability.
    pub settings: String,
    /// The floors.
    pub floors: Vec<Floor>,
    /// Endpoint against floor.
    pub comparisons: Vec<Comparison>,
    /// The other targets.
    pub checks: Vec<Check>,
}

/// The core library's criterion ratios.
#[derive(Debug, Default)]
pub struct CoreRatios {
    /// Raw HMAC-SHA256 over the token's signing input, ns.
    pub floor_ns: f64,
    /// (operation, ns, ratio, target ratio).
    pub ops: Vec<(String, f64, f64, f64)>,
}

/// A whole run.
#[derive(Debug, Default)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// When it started (UTC, RFC 3339).
    pub started: String,
    /// How long it took, seconds.
    pub seconds: f64,
    /// The machine.
    pub machine: Machine,
    /// Parameters common to every backend (clients, durations, seeding sizes).
    pub parameters: Vec<(String, String)>,
    /// Per backend.
    pub backends: Vec<BackendReport>,
    /// The core library's ratios.
    pub core: CoreRatios,
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (`null` when not finite).
fn jn(x: f64) -> String {
    if x.is_finite() {
        let rounded = (x * 1000.0).round() / 1000.0;
        format!("{rounded}")
    } else {
        "null".to_owned()
    }
}

/// A JSON object from rendered members.
fn jo(members: &[(&str, String)]) -> String {
    let body = members
        .iter()
        .map(|(k, v)| format!("{}: {v}", js(k)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{{{body}}}")
}

/// A JSON array from rendered items, one per line.
fn ja(items: Vec<String>) -> String {
    if items.is_empty() {
        return "[]".to_owned();
    }
    format!("[\n    {}\n  ]", items.join(",\n    "))
}

/// A load as JSON.
fn load_json(load: &Load) -> String {
    jo(&[
        ("requests", load.requests.to_string()),
        ("seconds", jn(load.seconds)),
        ("rate", jn(load.rate())),
        ("errors", load.errors().to_string()),
        ("timeouts", load.timeouts.to_string()),
        ("p50_ms", jn(load.p50_ms)),
        ("p99_ms", jn(load.p99_ms)),
        ("max_ms", jn(load.max_ms)),
    ])
}

impl Report {
    /// Every target of the run, met or not, as (backend, what, met).
    pub fn verdicts(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for b in &self.backends {
            for c in &b.comparisons {
                out.push((
                    b.backend.clone(),
                    format!("{} >= {} {}", c.endpoint, c.target, c.floor),
                    c.met(),
                ));
            }
            for c in &b.checks {
                out.push((b.backend.clone(), c.what.clone(), c.met));
            }
        }
        for (name, _, ratio, target) in &self.core.ops {
            out.push((
                "core".to_owned(),
                format!("{name} <= {target}x HMAC"),
                *ratio <= *target,
            ));
        }
        out
    }

    /// `target/bench/report.json`.
    pub fn to_json(&self) -> String {
        let m = &self.machine;
        let machine = jo(&[
            ("cpu", js(&m.cpu)),
            ("cores", m.cores.to_string()),
            ("memory_mib", m.memory_mib.to_string()),
            ("kernel", js(&m.kernel)),
            ("rustc", js(&m.rustc)),
            ("load_generator", js(&m.wrk)),
            ("fsyncs_per_sec", jn(m.fsyncs_per_sec)),
        ]);
        let parameters = jo(&self
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), js(v)))
            .collect::<Vec<_>>());
        let backends = self
            .backends
            .iter()
            .map(|b| {
                let floors = b
                    .floors
                    .iter()
                    .map(|f| {
                        jo(&[
                            ("name", js(&f.name)),
                            ("rate", jn(f.rate)),
                            ("what", js(&f.what)),
                            ("detail", js(&f.detail)),
                        ])
                    })
                    .collect();
                let comparisons = b
                    .comparisons
                    .iter()
                    .map(|c| {
                        jo(&[
                            ("endpoint", js(&c.endpoint)),
                            ("clients", c.clients.to_string()),
                            ("load", load_json(&c.load)),
                            ("floor", js(&c.floor)),
                            ("floor_rate", jn(c.floor_rate)),
                            ("ratio", jn(c.ratio())),
                            ("target", jn(c.target)),
                            ("met", c.met().to_string()),
                        ])
                    })
                    .collect();
                let checks = b
                    .checks
                    .iter()
                    .map(|c| {
                        jo(&[
                            ("what", js(&c.what)),
                            ("measured", js(&c.measured)),
                            ("required", js(&c.required)),
                            ("met", c.met.to_string()),
                        ])
                    })
                    .collect();
                jo(&[
                    ("backend", js(&b.backend)),
                    ("settings", js(&b.settings)),
                    ("floors", ja(floors)),
                    ("comparisons", ja(comparisons)),
                    ("checks", ja(checks)),
                ])
            })
            .collect();
        let core = jo(&[
            ("hmac_sha256_floor_ns", jn(self.core.floor_ns)),
            (
                "ops",
                ja(self
                    .core
                    .ops
                    .iter()
                    .map(|(name, ns, ratio, target)| {
                        jo(&[
                            ("name", js(name)),
                            ("ns", jn(*ns)),
                            ("ratio", jn(*ratio)),
                            ("target", jn(*target)),
                            ("met", (ratio <= target).to_string()),
                        ])
                    })
                    .collect()),
            ),
        ]);
        let verdicts = self.verdicts();
        let met = verdicts.iter().filter(|v| v.2).count();
        format!(
            "{{\n  \"mode\": {},\n  \"started\": {},\n  \"seconds\": {},\n  \"machine\": {machine},\n  \
             \"parameters\": {parameters},\n  \"targets_met\": {met},\n  \"targets\": {},\n  \
             \"backends\": {},\n  \"core\": {core}\n}}\n",
            js(&self.mode),
            js(&self.started),
            jn(self.seconds),
            verdicts.len(),
            ja(backends),
        )
    }

    /// The generated block of `docs/BENCHMARKS.md`; `chart` is the SVG's file name beside it.
    pub fn to_markdown(&self, chart: &str) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Generated by `cargo xtask bench{}` on {} ({:.0} s). Every ratio divides a figure by a floor \
             measured in the same run, on the same machine, with the same load generator and concurrency.\n",
            if self.mode == "quick" { " --quick" } else { "" },
            self.started,
            self.seconds
        );
        let _ = writeln!(s, "### Machine\n");
        let _ = writeln!(s, "| | |\n| --- | --- |");
        let _ = writeln!(s, "| CPU | {} ({} cores) |", m.cpu, m.cores);
        let _ = writeln!(s, "| memory | {} MiB |", m.memory_mib);
        let _ = writeln!(s, "| kernel | {} |", m.kernel);
        let _ = writeln!(s, "| compiler | {} |", m.rustc);
        let _ = writeln!(s, "| load generator | {} |", m.wrk);
        let _ = writeln!(
            s,
            "| disk | {:.0} fdatasync/s (4 KiB writes, measured at the start) |\n",
            m.fsyncs_per_sec
        );
        let _ = writeln!(s, "### Parameters\n");
        let _ = writeln!(s, "| | |\n| --- | --- |");
        for (k, v) in &self.parameters {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        for b in &self.backends {
            let _ = writeln!(s, "| {} server | `{}` |", b.backend, b.settings);
        }
        let _ = writeln!(s, "\n### Endpoints against their floors\n");
        let _ = writeln!(
            s,
            "| backend | endpoint | clients | req/s | p99 ms | errors | floor | floor ops/s | ratio | target | met |"
        );
        let _ = writeln!(
            s,
            "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"
        );
        for b in &self.backends {
            for c in &b.comparisons {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.1} | {} | {} | {:.0} | {:.2} | >= {} | {} |",
                    b.backend,
                    c.endpoint,
                    c.clients,
                    c.load.rate(),
                    c.load.p99_ms,
                    c.load.errors(),
                    c.floor,
                    c.floor_rate,
                    c.ratio(),
                    c.target,
                    yes_no(c.met())
                );
            }
        }
        let _ = writeln!(s, "\n### Floors\n");
        let _ = writeln!(s, "| backend | floor | ops/s | what | detail |");
        let _ = writeln!(s, "| --- | --- | ---: | --- | --- |");
        for b in &self.backends {
            for f in &b.floors {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} | {} | {} |",
                    b.backend, f.name, f.rate, f.what, f.detail
                );
            }
        }
        let _ = writeln!(s, "\n### Other targets\n");
        let _ = writeln!(s, "| backend | target | measured | required | met |");
        let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
        for b in &self.backends {
            for c in &b.checks {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    b.backend,
                    c.what,
                    c.measured,
                    c.required,
                    yes_no(c.met)
                );
            }
        }
        for (name, ns, ratio, target) in &self.core.ops {
            let _ = writeln!(
                s,
                "| core | `{name}` against raw HMAC-SHA256 ({:.0} ns) | {ns:.0} ns = {ratio:.2}x | <= {target}x | {} |",
                self.core.floor_ns,
                yes_no(ratio <= target)
            );
        }
        let verdicts = self.verdicts();
        let met = verdicts.iter().filter(|v| v.2).count();
        let _ = writeln!(s, "\n{met} of {} targets met.\n", verdicts.len());
        let _ = writeln!(s, "![Each endpoint against its floor]({chart})");
        s
    }

    /// A horizontal bar chart, one row per comparison: the floor's bar (grey), the endpoint's bar (green when
    /// the target is met, red when not) and a tick at the target, on a log scale of operations per second.
    pub fn to_svg(&self) -> String {
        let rows: Vec<(&str, &Comparison)> = self
            .backends
            .iter()
            .flat_map(|b| b.comparisons.iter().map(move |c| (b.backend.as_str(), c)))
            .collect();
        let (label_w, bar_w, row_h, top) = (330.0, 560.0, 34.0, 46.0);
        let width = label_w + bar_w + 150.0;
        let height = top + row_h * rows.len() as f64 + 40.0;
        let max = rows
            .iter()
            .map(|(_, c)| c.floor_rate.max(c.load.rate()))
            .fold(10.0_f64, f64::max);
        let (lo, hi) = (1.0_f64.log10(), (max * 1.5).log10().ceil());
        let x = |v: f64| label_w + bar_w * ((v.max(1.0).log10() - lo) / (hi - lo));
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="10" y="20" font-size="14" font-weight="bold">Each endpoint against its floor (ops/s, log scale; tick = target)</text>"#
        );
        let mut decade: f64 = 1.0;
        while decade.log10() <= hi {
            let gx = x(decade);
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{}" x2="{gx:.1}" y2="{}" stroke="#ddd"/><text x="{gx:.1}" y="{}" text-anchor="middle" fill="#666">{}</text>"##,
                top - 8.0,
                height - 30.0,
                height - 14.0,
                human(decade)
            );
            decade *= 10.0;
        }
        for (i, (backend, c)) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let colour = if c.met() { "#2e8b57" } else { "#c0392b" };
            let _ = writeln!(
                s,
                r#"<text x="10" y="{:.1}">{} {} ({} clients) vs {}</text>"#,
                y + 18.0,
                backend,
                escape(&c.endpoint),
                c.clients,
                escape(&c.floor)
            );
            let _ = writeln!(
                s,
                r##"<rect x="{label_w}" y="{:.1}" width="{:.1}" height="11" fill="#bbb"/><text x="{:.1}" y="{:.1}" fill="#555">{} {}</text>"##,
                y + 3.0,
                x(c.floor_rate) - label_w,
                x(c.floor_rate) + 4.0,
                y + 13.0,
                escape(&c.floor),
                human(c.floor_rate)
            );
            let _ = writeln!(
                s,
                r#"<rect x="{label_w}" y="{:.1}" width="{:.1}" height="11" fill="{colour}"/><text x="{:.1}" y="{:.1}" fill="{colour}">{} ({:.2}x)</text>"#,
                y + 16.0,
                x(c.load.rate()) - label_w,
                x(c.load.rate()) + 4.0,
                y + 26.0,
                human(c.load.rate()),
                c.ratio()
            );
            let tx = x(c.floor_rate * c.target);
            let _ = writeln!(
                s,
                r#"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="black" stroke-width="2"/>"#,
                y + 13.0,
                y + 30.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// `yes` / `**no**` for the tables.
fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

/// 1234 -> `1.2k`.
fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Text for SVG.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    //! The hand-written JSON must be valid JSON.

    use super::*;

    /// Strings are escaped, non-finite numbers become null.
    #[test]
    fn json_escapes() {
        assert_eq!(js("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
        assert_eq!(jn(f64::NAN), "null");
        assert_eq!(jn(1.23456), "1.235");
        assert_eq!(jo(&[("a", "1".into())]), r#"{"a": 1}"#);
    }
}
