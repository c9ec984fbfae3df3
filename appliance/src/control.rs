//! The control endpoints as pure logic: `POST /control/tracing` (body `on` or
//! `off`) and `POST /control/patching` (body `strategy=..&sync=..&batch=..`),
//! only with the boot-time token as `Authorization: Bearer <token>`. The
//! network service applies the [`Action`]s this returns; host-tested.

use alloc::vec::Vec;

use kernel::patch::config::{Strategy, SyncMode};

/// One change the request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    TracingOn,
    TracingOff,
    Strategy(Strategy),
    Sync(SyncMode),
    Batch(usize),
}

/// A refused request: the HTTP status and the text to answer.
pub type Refusal = (u16, &'static str);

/// Largest batch the control endpoint accepts.
pub const MAX_BATCH: usize = 1_000_000;

/// What a control request asks for, or why it is refused. `token` is the
/// boot-time `control_token=` (None: control is off); `bearer` what the client sent.
pub fn parse(path: &str, body: &[u8], token: Option<&str>, bearer: Option<&str>) -> Result<Vec<Action>, Refusal> {
    let Some(token) = token else {
        return Err((403, "control is off: boot with control_token=...\n"));
    };
    if bearer != Some(token) {
        return Err((403, "send the control token as `Authorization: Bearer <token>`\n"));
    }
    let body = core::str::from_utf8(body).unwrap_or("").trim();
    match path {
        "/control/tracing" => match body {
            "on" => Ok(alloc::vec![Action::TracingOn]),
            "off" => Ok(alloc::vec![Action::TracingOff]),
            _ => Err((400, "body: on or off\n")),
        },
        "/control/patching" => body
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some(("strategy", v)) => Strategy::parse(v).map(Action::Strategy).ok_or((400, "strategy: int3|stop_machine|naive\n")),
                Some(("sync", v)) => SyncMode::parse(v).map(Action::Sync).ok_or((400, "sync: cpuid|iret|serialize\n")),
                Some(("batch", v)) => match v.parse::<usize>() {
                    Ok(n @ 1..=MAX_BATCH) => Ok(Action::Batch(n)),
                    _ => Err((400, "batch: 1..=1000000\n")),
                },
                _ => Err((400, "body: strategy=..&sync=..&batch=..\n")),
            })
            .collect(),
        _ => Err((404, "not found\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Option<&str> = Some("s3cret");

    #[test]
    fn the_token_is_always_required() {
        assert_eq!(parse("/control/tracing", b"off", None, Some("s3cret")).unwrap_err().0, 403);
        assert_eq!(parse("/control/tracing", b"off", T, None).unwrap_err().0, 403);
        assert_eq!(parse("/control/tracing", b"off", T, Some("s3cre")).unwrap_err().0, 403);
        assert_eq!(parse("/control/nope", b"", T, Some("s3cret")).unwrap_err().0, 404);
    }

    #[test]
    fn tracing_and_patching_bodies() {
        assert_eq!(parse("/control/tracing", b" on\n", T, T), Ok(alloc::vec![Action::TracingOn]));
        assert_eq!(parse("/control/tracing", b"off", T, T), Ok(alloc::vec![Action::TracingOff]));
        assert_eq!(parse("/control/tracing", b"maybe", T, T).unwrap_err().0, 400);
        assert_eq!(
            parse("/control/patching", b"strategy=stop_machine&sync=iret&batch=64", T, T),
            Ok(alloc::vec![Action::Strategy(Strategy::StopMachine), Action::Sync(SyncMode::Iret), Action::Batch(64)])
        );
        for bad in [&b"strategy=int4"[..], b"sync=mfence", b"batch=0", b"batch=1000001", b"batch=x", b"color=red", b"strategy"] {
            assert_eq!(parse("/control/patching", bad, T, T).unwrap_err().0, 400, "{}", core::str::from_utf8(bad).unwrap());
        }
        // Nothing is applied from a request with one bad part.
        assert!(parse("/control/patching", b"batch=8&sync=nope", T, T).is_err());
    }
}
