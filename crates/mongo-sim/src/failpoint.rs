//! MongoDB's test fail points, with the server's own protocol (`configureFailPoint`), so a
//! fault-injection test written against mongo-sim runs unchanged against a real `mongod`
//! started with `--setParameter enableTestCommands=1`. mongo-sim always behaves as if test
//! commands were enabled.
//!
//! Supported: `failCommand` (failCommands, errorCode, errorLabels, closeConnection,
//! blockConnection/blockTimeMS, writeConcernError, appName) and
//! `failGetMoreAfterCursorCheckout` (errorCode), and `maxTimeAlwaysTimeOut` (every command
//! that carries a `maxTimeMS` fails with 50 `MaxTimeMSExpired`, as if its time ran out), with
//! modes `alwaysOn`, `off`, `{times: n}`, `{skip: n}`.

use crate::error::{CommandError, CommandResult};
use bson::{Bson, Document};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Off,
    AlwaysOn,
    Times(i64),
    Skip(i64),
}

#[derive(Debug, Clone)]
struct FailPoint {
    mode: Mode,
    data: Document,
    /// How many times the fail point fired; `configureFailPoint` answers it as `count`.
    entered: i64,
}

/// What a fired `failCommand` asks the server to do to the command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injected {
    pub close_connection: bool,
    pub block: Option<Duration>,
    pub error: Option<CommandError>,
    pub write_concern_error: Option<Document>,
}

#[derive(Debug, Default)]
pub struct FailPoints {
    points: HashMap<String, FailPoint>,
}

pub const FAIL_COMMAND: &str = "failCommand";
pub const FAIL_GET_MORE_AFTER_CURSOR_CHECKOUT: &str = "failGetMoreAfterCursorCheckout";
pub const MAX_TIME_ALWAYS_TIME_OUT: &str = "maxTimeAlwaysTimeOut";
const KNOWN: &[&str] = &[
    FAIL_COMMAND,
    FAIL_GET_MORE_AFTER_CURSOR_CHECKOUT,
    MAX_TIME_ALWAYS_TIME_OUT,
];

impl FailPoints {
    /// `configureFailPoint`: returns the previous `count`.
    pub fn configure(&mut self, cmd: &Document) -> CommandResult<i64> {
        let name = cmd
            .get_str("configureFailPoint")
            .map_err(|_| CommandError::type_mismatch("configureFailPoint must be a string"))?;
        if !KNOWN.contains(&name) {
            return Err(CommandError::bad_value(format!(
                "Unknown fail point: {name}"
            )));
        }
        let mode = parse_mode(cmd.get("mode"))?;
        let data = match cmd.get("data") {
            None => Document::new(),
            Some(Bson::Document(d)) => d.clone(),
            Some(_) => return Err(CommandError::type_mismatch("data must be an object")),
        };
        if name == FAIL_COMMAND
            && mode != Mode::Off
            && !matches!(data.get("failCommands"), Some(Bson::Array(_)))
        {
            return Err(CommandError::bad_value(
                "'failCommands' must be an array of command names",
            ));
        }
        let previous = self.points.get(name).map(|p| p.entered).unwrap_or(0);
        self.points.insert(
            name.to_string(),
            FailPoint {
                mode,
                data,
                entered: 0,
            },
        );
        Ok(previous)
    }

    /// Whether `failCommand` fires for this command; consumes one activation when it does.
    pub fn fail_command(
        &mut self,
        command: &str,
        app_name: Option<&str>,
        is_write: bool,
    ) -> Option<Injected> {
        let fp = self.points.get_mut(FAIL_COMMAND)?;
        let listed = fp
            .data
            .get_array("failCommands")
            .map(|a| a.iter().any(|c| c.as_str() == Some(command)))
            .unwrap_or(false);
        if !listed {
            return None;
        }
        if let Ok(want) = fp.data.get_str("appName") {
            if app_name != Some(want) {
                return None;
            }
        }
        if !fire(fp) {
            return None;
        }
        let data = &fp.data;
        let mut injected = Injected {
            close_connection: data.get_bool("closeConnection").unwrap_or(false),
            ..Default::default()
        };
        if data.get_bool("blockConnection").unwrap_or(false) {
            let ms = number(data.get("blockTimeMS")).unwrap_or(0).max(0) as u64;
            injected.block = Some(Duration::from_millis(ms));
        }
        if let Some(code) = number(data.get("errorCode")) {
            let mut err =
                CommandError::new(code as i32, "Failing command via 'failCommand' failpoint");
            match data.get_array("errorLabels") {
                Ok(labels) => {
                    for l in labels.iter().filter_map(|l| l.as_str()) {
                        err = err.with_label(l);
                    }
                }
                // Without explicit labels the server adds the ones a real failure would get;
                // for writes in a retryable context that is RetryableWriteError.
                Err(_) if is_write && is_retryable_write_code(code as i32) => {
                    err = err.with_label("RetryableWriteError");
                }
                Err(_) => {}
            }
            injected.error = Some(err);
        }
        if let Ok(wce) = data.get_document("writeConcernError") {
            injected.write_concern_error = Some(wce.clone());
        }
        Some(injected)
    }

    /// Whether `maxTimeAlwaysTimeOut` fires for a command that set `maxTimeMS`; consumes one
    /// activation when it does. (MongoDB checks it where an operation checks its deadline, so
    /// commands without a time limit, and the await of a tailable `getMore`, are unaffected.)
    pub fn max_time_always_time_out(&mut self) -> bool {
        self.points
            .get_mut(MAX_TIME_ALWAYS_TIME_OUT)
            .is_some_and(fire)
    }

    /// Whether `failGetMoreAfterCursorCheckout` fires; returns the error code to fail with.
    pub fn fail_get_more(&mut self) -> Option<i32> {
        let fp = self.points.get_mut(FAIL_GET_MORE_AFTER_CURSOR_CHECKOUT)?;
        if !fire(fp) {
            return None;
        }
        Some(
            number(fp.data.get("errorCode")).unwrap_or(crate::error::codes::INTERNAL_ERROR as i64)
                as i32,
        )
    }
}

fn fire(fp: &mut FailPoint) -> bool {
    let fires = match &mut fp.mode {
        Mode::Off => false,
        Mode::AlwaysOn => true,
        Mode::Times(n) => {
            *n -= 1;
            if *n <= 0 {
                fp.mode = Mode::Off;
            }
            true
        }
        Mode::Skip(n) => {
            if *n > 0 {
                *n -= 1;
                false
            } else {
                true
            }
        }
    };
    if fires {
        fp.entered += 1;
    }
    fires
}

fn number(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(i) => Some(*i as i64),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => Some(*d as i64),
        _ => None,
    }
}

fn parse_mode(mode: Option<&Bson>) -> CommandResult<Mode> {
    match mode {
        Some(Bson::String(s)) if s == "alwaysOn" => Ok(Mode::AlwaysOn),
        Some(Bson::String(s)) if s == "off" => Ok(Mode::Off),
        Some(Bson::Document(d)) => {
            if let Some(n) = number(d.get("times")) {
                Ok(if n > 0 { Mode::Times(n) } else { Mode::Off })
            } else if let Some(n) = number(d.get("skip")) {
                Ok(Mode::Skip(n.max(0)))
            } else {
                Err(CommandError::bad_value(
                    "mode must be 'alwaysOn', 'off', {times: n} or {skip: n}",
                ))
            }
        }
        _ => Err(CommandError::bad_value(
            "mode must be 'alwaysOn', 'off', {times: n} or {skip: n}",
        )),
    }
}

/// The codes MongoDB labels `RetryableWriteError` on a retryable write.
fn is_retryable_write_code(code: i32) -> bool {
    matches!(
        code,
        6 | 7 | 89 | 91 | 189 | 262 | 9001 | 10107 | 11600 | 11602 | 13435 | 13436
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn times_mode_fires_n_times_and_counts() {
        let mut fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand", "mode": {"times": 2},
            "data": {"failCommands": ["insert"], "errorCode": 91}
        })
        .unwrap();
        assert!(fps.fail_command("find", None, false).is_none());
        let inj = fps.fail_command("insert", None, true).unwrap();
        let err = inj.error.unwrap();
        assert_eq!((err.code, err.code_name), (91, "ShutdownInProgress"));
        assert_eq!(err.labels, vec!["RetryableWriteError".to_string()]);
        assert!(fps.fail_command("insert", None, true).is_some());
        assert!(fps.fail_command("insert", None, true).is_none());
        let prev = fps
            .configure(&doc! {"configureFailPoint": "failCommand", "mode": "off"})
            .unwrap();
        assert_eq!(prev, 2);
    }

    #[test]
    fn skip_mode_and_app_name_and_explicit_labels() {
        let mut fps = FailPoints::default();
        fps.configure(&doc! {
            "configureFailPoint": "failCommand", "mode": {"skip": 1},
            "data": {"failCommands": ["getMore"], "errorCode": 6, "errorLabels": [], "appName": "w"}
        })
        .unwrap();
        assert!(fps.fail_command("getMore", Some("w"), false).is_none());
        assert!(fps.fail_command("getMore", Some("other"), false).is_none());
        let err = fps
            .fail_command("getMore", Some("w"), false)
            .unwrap()
            .error
            .unwrap();
        assert!(err.labels.is_empty());
    }

    #[test]
    fn rejects_bad_configuration() {
        let mut fps = FailPoints::default();
        assert!(fps
            .configure(&doc! {"configureFailPoint": "nope", "mode": "off"})
            .is_err());
        assert!(fps
            .configure(&doc! {"configureFailPoint": "failCommand", "mode": "sometimes", "data": {"failCommands": []}})
            .is_err());
        assert!(fps
            .configure(&doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {}})
            .is_err());
    }
}
