//! What a bench run found, and its three renderings: `target/bench/report.json` (serde_json), the Markdown
//! block of `docs/BENCHMARKS.md`, and the SVG chart of each endpoint against its floor.

use std::fmt::Write as _;

use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};
use serde_json::Value;

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
    /// The [`crate::floors::describe`] line: pool, workers, hashing, durability.
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

/// A figure in the JSON report: rounded to three decimals, `null` when not finite.
fn figure(x: f64) -> Value {
    if x.is_finite() {
        Value::from((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// `(key, value)` pairs as a JSON object in their own order (a `serde_json::Map` would sort them).
struct Ordered<'a>(&'a [(String, String)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// `report.json`'s top level.
#[derive(Serialize)]
struct ReportJson<'a> {
    /// `quick` or `full`.
    mode: &'a str,
    /// When the run started.
    started: &'a str,
    /// How long it took.
    seconds: Value,
    /// The machine.
    machine: MachineJson<'a>,
    /// The common parameters, in order.
    parameters: Ordered<'a>,
    /// Targets met.
    targets_met: usize,
    /// Targets in all.
    targets: usize,
    /// Per backend.
    backends: Vec<BackendJson<'a>>,
    /// The core library's ratios.
    core: CoreJson<'a>,
}

/// [`Machine`] in the report.
#[derive(Serialize)]
struct MachineJson<'a> {
    /// CPU model.
    cpu: &'a str,
    /// Cores.
    cores: usize,
    /// Memory, MiB.
    memory_mib: u64,
    /// Kernel release.
    kernel: &'a str,
    /// Compiler.
    rustc: &'a str,
    /// wrk's version.
    load_generator: &'a str,
    /// fdatasync rate.
    fsyncs_per_sec: Value,
}

/// [`BackendReport`] in the report.
#[derive(Serialize)]
struct BackendJson<'a> {
    /// `sqlite` or `postgres`.
    backend: &'a str,
    /// The server's settings line.
    settings: &'a str,
    /// The floors.
    floors: Vec<FloorJson<'a>>,
    /// Endpoint against floor.
    comparisons: Vec<ComparisonJson<'a>>,
    /// The other targets.
    checks: Vec<CheckJson<'a>>,
}

/// [`Floor`] in the report.
#[derive(Serialize)]
struct FloorJson<'a> {
    /// Its name.
    name: &'a str,
    /// Operations per second.
    rate: Value,
    /// What it is.
    what: &'a str,
    /// Extra figures.
    detail: &'a str,
}

/// [`Comparison`] in the report.
#[derive(Serialize)]
struct ComparisonJson<'a> {
    /// The endpoint.
    endpoint: &'a str,
    /// Concurrent clients.
    clients: usize,
    /// Its load.
    load: LoadJson,
    /// The floor's name.
    floor: &'a str,
    /// The floor's rate.
    floor_rate: Value,
    /// `rate / floor_rate`.
    ratio: Value,
    /// The least acceptable ratio.
    target: Value,
    /// Whether it was reached.
    met: bool,
}

/// [`Load`] in the report.
#[derive(Serialize)]
struct LoadJson {
    /// Completed requests.
    requests: u64,
    /// Wall time.
    seconds: Value,
    /// Requests per second.
    rate: Value,
    /// Failures of every kind.
    errors: u64,
    /// Requests without an answer in time.
    timeouts: u64,
    /// Median latency.
    p50_ms: Value,
    /// 99th percentile latency.
    p99_ms: Value,
    /// Slowest request.
    max_ms: Value,
}

/// [`Check`] in the report.
#[derive(Serialize)]
struct CheckJson<'a> {
    /// What is checked.
    what: &'a str,
    /// The measured value.
    measured: &'a str,
    /// The requirement.
    required: &'a str,
    /// Whether it holds.
    met: bool,
}

/// [`CoreRatios`] in the report.
#[derive(Serialize)]
struct CoreJson<'a> {
    /// Raw HMAC-SHA256, ns.
    hmac_sha256_floor_ns: Value,
    /// Each operation against it.
    ops: Vec<CoreOpJson<'a>>,
}

/// One operation of [`CoreRatios`] in the report.
#[derive(Serialize)]
struct CoreOpJson<'a> {
    /// The operation.
    name: &'a str,
    /// Its time, ns.
    ns: Value,
    /// Its time against the floor.
    ratio: Value,
    /// The most acceptable ratio.
    target: Value,
    /// Whether it holds.
    met: bool,
}

impl From<&Load> for LoadJson {
    fn from(load: &Load) -> LoadJson {
        LoadJson {
            requests: load.requests,
            seconds: figure(load.seconds),
            rate: figure(load.rate()),
            errors: load.errors(),
            timeouts: load.timeouts,
            p50_ms: figure(load.p50_ms),
            p99_ms: figure(load.p99_ms),
            max_ms: figure(load.max_ms),
        }
    }
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
    pub fn to_json(&self) -> serde_json::Result<String> {
        let m = &self.machine;
        let verdicts = self.verdicts();
        let backends = self
            .backends
            .iter()
            .map(|b| BackendJson {
                backend: &b.backend,
                settings: &b.settings,
                floors: b
                    .floors
                    .iter()
                    .map(|f| FloorJson {
                        name: &f.name,
                        rate: figure(f.rate),
                        what: &f.what,
                        detail: &f.detail,
                    })
                    .collect(),
                comparisons: b
                    .comparisons
                    .iter()
                    .map(|c| ComparisonJson {
                        endpoint: &c.endpoint,
                        clients: c.clients,
                        load: LoadJson::from(&c.load),
                        floor: &c.floor,
                        floor_rate: figure(c.floor_rate),
                        ratio: figure(c.ratio()),
                        target: figure(c.target),
                        met: c.met(),
                    })
                    .collect(),
                checks: b
                    .checks
                    .iter()
                    .map(|c| CheckJson {
                        what: &c.what,
                        measured: &c.measured,
                        required: &c.required,
                        met: c.met,
                    })
                    .collect(),
            })
            .collect();
        let report = ReportJson {
            mode: &self.mode,
            started: &self.started,
            seconds: figure(self.seconds),
            machine: MachineJson {
                cpu: &m.cpu,
                cores: m.cores,
                memory_mib: m.memory_mib,
                kernel: &m.kernel,
                rustc: &m.rustc,
                load_generator: &m.wrk,
                fsyncs_per_sec: figure(m.fsyncs_per_sec),
            },
            parameters: Ordered(&self.parameters),
            targets_met: verdicts.iter().filter(|v| v.2).count(),
            targets: verdicts.len(),
            backends,
            core: CoreJson {
                hmac_sha256_floor_ns: figure(self.core.floor_ns),
                ops: self
                    .core
                    .ops
                    .iter()
                    .map(|(name, ns, ratio, target)| CoreOpJson {
                        name,
                        ns: figure(*ns),
                        ratio: figure(*ratio),
                        target: figure(*target),
                        met: ratio <= target,
                    })
                    .collect(),
            },
        };
        Ok(serde_json::to_string_pretty(&report)? + "\n")
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
    //! The JSON report keeps its members in order and its figures rounded.

    use super::*;

    /// Figures are rounded to three decimals; non-finite ones are null.
    #[test]
    fn rounds_figures() {
        assert_eq!(figure(f64::NAN), Value::Null);
        assert_eq!(figure(1.23456), Value::from(1.235));
    }

    /// Parameters keep their order, and the report is JSON that reads back.
    #[test]
    fn writes_ordered_json() -> serde_json::Result<()> {
        let report = Report {
            mode: "quick".into(),
            parameters: vec![("z".into(), "1".into()), ("a".into(), "\"2\"".into())],
            ..Report::default()
        };
        let json = report.to_json()?;
        assert!(json.find("\"z\"") < json.find("\"a\""));
        let value: Value = serde_json::from_str(&json)?;
        assert_eq!(value["parameters"]["a"], "\"2\"");
        assert_eq!(value["targets"], 0);
        Ok(())
    }
}
