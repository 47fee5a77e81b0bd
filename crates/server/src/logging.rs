//! The log: the `log` facade written by env_logger, as text for people or as one JSON object per line for log
//! shippers (`log.format`).
//!
//! A record's data travels as `log`'s structured key-values, never as `key=value` text in its message: the text
//! format writes them after the message, the JSON format as typed fields (numbers stay numbers). Audit events
//! (target [`AUDIT`]) name what happened with an [`Event`] from a closed vocabulary; a record logged while a
//! request is served also carries that request's `request_id`.

use std::fmt::{self, Display, Write as _};
use std::io::{self, Write as _};
use std::sync::OnceLock;

use log::kv::{self, Key, Source, Value, VisitSource, VisitValue};
use log::{Level, LevelFilter, Record};
use serde::ser::{Serialize, SerializeMap as _, Serializer};
use serde_json::Value as Json;

use crate::settings::{LogFormat, LogSettings};

/// The target of audit events: logins, refreshes, releases, and every change an operator makes.
pub const AUDIT: &str = "crm_auth::audit";
/// The target of the access log: one record per answered request.
pub const ACCESS: &str = "crm_auth::access";
/// The target of what a command tells its operator on stderr (a warning, the error it ended with); never
/// filtered out.
pub const CLI: &str = "crm_auth::cli";
/// The target of a panic's report with the JSON format; never filtered out.
pub const PANIC: &str = "crm_auth::panic";

/// The fields every JSON line starts with; a key-value of the same name is left out rather than repeated.
const RESERVED: [&str; 4] = ["ts", "level", "target", "msg"];

/// The format the logger was set up with. The logger is process-wide (the `log` facade has one), so this is
/// too; unset until [`init`] succeeds.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

tokio::task_local! {
    /// The id of the request being served, added to every record logged while serving it, so audit events
    /// join their access-log line.
    static REQUEST_ID: String;
}

/// Runs `fut` (the serving of one request) with `request_id` added to every record it logs.
pub fn with_request_id<F: Future>(request_id: String, fut: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(request_id, fut)
}

/// Why the logger could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `RUST_LOG` is set and is not a filter.
    #[error("RUST_LOG: {0}")]
    RustLog(String),
    /// A logger was set up before.
    #[error("the logger is already set up")]
    AlreadySet(#[from] log::SetLoggerError),
}

/// The filter in force: `RUST_LOG` when it is set and not blank (a one-off `RUST_LOG=debug` needs no edit of
/// the configuration), else `log.level`.
pub fn filter<'a>(settings: &'a LogSettings, rust_log: Option<&'a str>) -> Result<&'a str, LogError> {
    match rust_log.filter(|spec| !spec.trim().is_empty()) {
        Some(spec) => {
            check_filter(spec).map_err(LogError::RustLog)?;
            Ok(spec)
        }
        None => Ok(&settings.level),
    }
}

/// Whether `spec` is a filter in `RUST_LOG`'s syntax; why not if it is not.
pub fn check_filter(spec: &str) -> Result<(), String> {
    if spec.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    env_filter::Builder::new()
        .try_parse(spec)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sets up the process's logger from `settings` (and `RUST_LOG`, see [`filter`]) on stderr.
pub fn init(settings: &LogSettings) -> Result<(), LogError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(filter(settings, rust_log.as_deref())?)
        .filter_module(CLI, LevelFilter::Warn)
        .filter_module(PANIC, LevelFilter::Error);
    match settings.format {
        LogFormat::Text => {
            if let Ok(style) = std::env::var("RUST_LOG_STYLE") {
                builder.parse_write_style(&style);
            }
            builder.format_key_values(|buf, fields| buf.write_all(text_fields(fields).as_bytes()));
        }
        LogFormat::Json => {
            builder
                .write_style(env_logger::WriteStyle::Never)
                .format(|buf, record| {
                    let ts = buf.timestamp_millis();
                    serde_json::to_writer(&mut *buf, &JsonLine::new(&ts, record))
                        .map_err(io::Error::other)?;
                    writeln!(buf)
                });
        }
    }
    builder.try_init()?;
    if settings.format == LogFormat::Json {
        // The default hook writes free text, which would be the one line of the log that does not parse.
        std::panic::set_hook(Box::new(|info| log::error!(target: PANIC, "{info}")));
    }
    let _ = FORMAT.set(settings.format);
    Ok(())
}

/// Tells the operator something on stderr: `warning: ...` or `error: ...` with the text format or before the
/// logger is set up (a configuration that does not load), a JSON record (target [`CLI`]) with the JSON format,
/// so that every line of a JSON log parses.
pub fn notice(level: Level, message: impl Display) {
    if FORMAT.get() == Some(&LogFormat::Json) {
        log::log!(target: CLI, level, "{message}");
        log::logger().flush();
    } else {
        let prefix = if level == Level::Error { "error" } else { "warning" };
        eprintln!("{prefix}: {message}");
    }
}

/// An audit event's name, the `event` field of a record with target [`AUDIT`]. The README lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A token was issued for a password or a Web API key.
    LoginOk,
    /// A login was refused.
    LoginFailed,
    /// A password login was refused unchecked, its organisation + username being locked out.
    LoginLocked,
    /// A password login found every check slot of its organisation + username taken for
    /// `auth.lockout.max_wait_ms` and was answered `UNAVAILABLE`, nothing counted.
    LoginBusy,
    /// A session was refreshed (rotated, or its newest token handed back within the reuse interval).
    SessionRefresh,
    /// A refresh was refused.
    SessionRefreshRefused,
    /// A superseded token came back after the reuse interval; its session was ended as stolen.
    SessionReuse,
    /// A refresh found the session's user, key, unit or organisation gone and ended the session.
    SessionEnd,
    /// A token was released (logout).
    SessionRelease,
    /// An operator ended a session.
    SessionRevoke,
    /// An operator created an organisation.
    OrganisationCreate,
    /// An operator disabled an organisation (its live sessions end).
    OrganisationDisable,
    /// An operator enabled an organisation.
    OrganisationEnable,
    /// An operator created a unit.
    UnitCreate,
    /// An operator disabled a unit (its live sessions end).
    UnitDisable,
    /// An operator enabled a unit.
    UnitEnable,
    /// An operator created a user.
    UserCreate,
    /// An operator changed a user (its password).
    UserUpdate,
    /// An operator disabled a user (its live sessions end).
    UserDisable,
    /// An operator enabled a user.
    UserEnable,
    /// An operator created a Web API key.
    KeyCreate,
    /// An operator revoked a Web API key (its live sessions end).
    KeyRevoke,
    /// An operator imported organisations, units, users and keys from a file.
    Import,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 23] = [
        Event::LoginOk,
        Event::LoginFailed,
        Event::LoginLocked,
        Event::LoginBusy,
        Event::SessionRefresh,
        Event::SessionRefreshRefused,
        Event::SessionReuse,
        Event::SessionEnd,
        Event::SessionRelease,
        Event::SessionRevoke,
        Event::OrganisationCreate,
        Event::OrganisationDisable,
        Event::OrganisationEnable,
        Event::UnitCreate,
        Event::UnitDisable,
        Event::UnitEnable,
        Event::UserCreate,
        Event::UserUpdate,
        Event::UserDisable,
        Event::UserEnable,
        Event::KeyCreate,
        Event::KeyRevoke,
        Event::Import,
    ];

    /// The name written to the log: `noun.verb`, as the admin API's audit actions are named.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::LoginOk => "login.ok",
            Event::LoginFailed => "login.failed",
            Event::LoginLocked => "login.locked",
            Event::LoginBusy => "login.busy",
            Event::SessionRefresh => "session.refresh",
            Event::SessionRefreshRefused => "session.refresh_refused",
            Event::SessionReuse => "session.reuse",
            Event::SessionEnd => "session.end",
            Event::SessionRelease => "session.release",
            Event::SessionRevoke => "session.revoke",
            Event::OrganisationCreate => "organisation.create",
            Event::OrganisationDisable => "organisation.disable",
            Event::OrganisationEnable => "organisation.enable",
            Event::UnitCreate => "unit.create",
            Event::UnitDisable => "unit.disable",
            Event::UnitEnable => "unit.enable",
            Event::UserCreate => "user.create",
            Event::UserUpdate => "user.update",
            Event::UserDisable => "user.disable",
            Event::UserEnable => "user.enable",
            Event::KeyCreate => "key.create",
            Event::KeyRevoke => "key.revoke",
            Event::Import => "import",
        }
    }
}

impl Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl kv::ToValue for Event {
    fn to_value(&self) -> Value<'_> {
        Value::from(self.as_str())
    }
}

/// A duration in milliseconds with microsecond precision, as the access log's `duration_ms`.
pub fn millis(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A record's key-values as JSON values, in order: absent ones (`None`) left out, a repeated key kept once,
/// and the served request's id added when the record does not carry one.
fn fields<'kvs>(source: &'kvs dyn Source) -> Vec<(Key<'kvs>, Json)> {
    struct Collect<'kvs>(Vec<(Key<'kvs>, Json)>);
    impl<'kvs> VisitSource<'kvs> for Collect<'kvs> {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
            let value = json_value(&value);
            if !value.is_null() && !self.0.iter().any(|(k, _)| *k == key) {
                self.0.push((key, value));
            }
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    // Visiting a slice of pairs cannot fail; were a source to fail, what it gave until then is still written.
    let _ = source.visit(&mut collect);
    let mut fields = collect.0;
    if !fields.iter().any(|(k, _)| k.as_str() == "request_id")
        && let Ok(id) = REQUEST_ID.try_with(Clone::clone)
    {
        fields.push((Key::from_str_static("request_id"), Json::String(id)));
    }
    fields
}

/// A key-value's value with its type: numbers and booleans as such, anything else as its text.
fn json_value(value: &Value<'_>) -> Json {
    struct ToJson(Json);
    impl<'v> VisitValue<'v> for ToJson {
        fn visit_any(&mut self, value: Value<'_>) -> Result<(), kv::Error> {
            self.0 = Json::String(value.to_string());
            Ok(())
        }
        fn visit_null(&mut self) -> Result<(), kv::Error> {
            self.0 = Json::Null;
            Ok(())
        }
        fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
            self.0 = Json::from(value);
            Ok(())
        }
        fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
            self.0 = Json::from(value);
            Ok(())
        }
        fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
            // Not-a-number and the infinities have no JSON form: null, and the field is left out.
            self.0 = serde_json::Number::from_f64(value).map_or(Json::Null, Json::Number);
            Ok(())
        }
        fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
            self.0 = Json::Bool(value);
            Ok(())
        }
        fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
            self.0 = Json::String(value.to_owned());
            Ok(())
        }
    }
    let mut json = ToJson(Json::Null);
    match value.visit(&mut json) {
        Ok(()) => json.0,
        Err(_) => Json::String(value.to_string()),
    }
}

/// The text format's fields: ` key=value` each, a string quoted (and escaped) unless it is one word of
/// letters, digits and `-_.:/@+,*`, so that a name holding spaces, quotes or a newline cannot pass for
/// another field or another line.
fn text_fields(source: &dyn Source) -> String {
    let mut text = String::new();
    for (key, value) in fields(source) {
        let _ = match &value {
            Json::String(s) if is_bare(s) => write!(text, " {key}={s}"),
            Json::String(s) => write!(text, " {key}={s:?}"),
            other => write!(text, " {key}={other}"),
        };
    }
    text
}

fn is_bare(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "-_.:/@+,*".contains(c))
}

/// One record as one JSON object: `ts`, `level`, `target`, `msg`, then its fields.
struct JsonLine<'a> {
    ts: &'a dyn Display,
    level: Level,
    target: &'a str,
    msg: String,
    fields: Vec<(Key<'a>, Json)>,
}

impl<'a> JsonLine<'a> {
    fn new(ts: &'a dyn Display, record: &'a Record<'_>) -> JsonLine<'a> {
        JsonLine {
            ts,
            level: record.level(),
            target: record.target(),
            msg: record.args().to_string(),
            fields: fields(record.key_values()),
        }
    }
}

impl Serialize for JsonLine<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ts", &self.ts.to_string())?;
        map.serialize_entry("level", level_name(self.level))?;
        map.serialize_entry("target", self.target)?;
        map.serialize_entry("msg", &self.msg)?;
        for (key, value) in &self.fields {
            if !RESERVED.contains(&key.as_str()) {
                map.serialize_entry(key.as_str(), value)?;
            }
        }
        map.end()
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

#[cfg(test)]
mod tests {
    use log::kv::ToValue as _;

    use super::*;

    fn json_of(record: &Record<'_>) -> serde_json::Map<String, Json> {
        let line = serde_json::to_string(&JsonLine::new(&"2026-01-02T03:04:05.678Z", record)).unwrap();
        assert!(!line.contains('\n'), "{line}");
        match serde_json::from_str(&line).unwrap() {
            Json::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn json_lines_keep_the_fields_types_and_order() {
        let client: std::net::IpAddr = "2001:db8::7".parse().unwrap();
        let kvs: [(&str, Value<'_>); 7] = [
            ("event", Event::LoginOk.to_value()),
            ("status", Value::from(200_u16)),
            ("duration_ms", Value::from(1.25_f64)),
            ("username", Value::from("a \"quoted\"\nname")),
            ("client", Value::from_display(&client)),
            ("unit", Value::null()),
            ("msg", Value::from("not the message")),
        ];
        let args = format_args!("login");
        let record = Record::builder()
            .target(AUDIT)
            .level(Level::Info)
            .args(args)
            .key_values(&kvs)
            .build();
        let line = serde_json::to_string(&JsonLine::new(&"T", &record)).unwrap();
        assert!(
            line.starts_with(r#"{"ts":"T","level":"info","target":"crm_auth::audit","msg":"login","event""#),
            "{line}"
        );
        let map = json_of(&record);
        assert_eq!(map["event"], "login.ok");
        assert_eq!(map["status"], 200);
        assert_eq!(map["duration_ms"], 1.25);
        assert_eq!(map["username"], "a \"quoted\"\nname");
        assert_eq!(map["client"], "2001:db8::7");
        assert_eq!(map["msg"], "login");
        assert!(!map.contains_key("unit"), "absent fields are left out");
    }

    #[test]
    fn text_fields_quote_what_could_pass_for_another_field() {
        let kvs: [(&str, Value<'_>); 6] = [
            ("organisation", Value::from("Straße")),
            ("username", Value::from("bob client=10.0.0.1")),
            ("path", Value::from("/crmapi/rest/v2/authentication/token")),
            ("status", Value::from(401_u16)),
            ("reason", Value::from("")),
            ("unit", Value::null()),
        ];
        assert_eq!(
            text_fields(&kvs),
            r#" organisation=Straße username="bob client=10.0.0.1" path=/crmapi/rest/v2/authentication/token status=401 reason="""#
        );
    }

    #[tokio::test]
    async fn records_logged_while_serving_carry_the_request_id() {
        let kvs: [(&str, Value<'_>); 1] = [("event", Event::SessionRelease.to_value())];
        let inside = with_request_id("ABC".to_owned(), async { text_fields(&kvs) }).await;
        assert_eq!(inside, " event=session.release request_id=ABC");
        assert_eq!(text_fields(&kvs), " event=session.release");
        // A record's own request id is not repeated.
        let own: [(&str, Value<'_>); 1] = [("request_id", Value::from("OWN"))];
        let inside = with_request_id("ABC".to_owned(), async { text_fields(&own) }).await;
        assert_eq!(inside, " request_id=OWN");
    }

    #[test]
    fn rust_log_wins_when_set_and_both_are_checked() {
        let settings = LogSettings::default();
        assert_eq!(filter(&settings, None).unwrap(), "info");
        assert_eq!(filter(&settings, Some(" ")).unwrap(), "info");
        assert_eq!(filter(&settings, Some("debug")).unwrap(), "debug");
        let err = filter(&settings, Some("info,a=b=c")).unwrap_err().to_string();
        assert!(err.starts_with("RUST_LOG: "), "{err}");
        assert!(check_filter("info,crm_auth::access=warn").is_ok());
        assert!(check_filter("").is_err());
        assert!(check_filter("crm_auth=loud").is_err());
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        assert_eq!(millis(std::time::Duration::from_micros(1_234)), 1.234);
        assert_eq!(millis(std::time::Duration::from_nanos(1_234_567)), 1.235);
    }
}
