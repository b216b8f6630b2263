//! Server-rendered pages: the login form and the signed-in view. No
//! JavaScript; every action is a plain form post.

use std::fmt::Write as _;

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light; --ink:#1d2330; --muted:#4a5366; --line:#d5dae3; --accent:#1f4fd1; --bg:#f4f6fa; --bad:#a32020; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:var(--bg); }
main { max-width:32rem; margin:8vh auto; padding:2rem 2.25rem; background:#fff; border:1px solid var(--line); border-radius:12px; box-shadow:0 2px 12px rgba(20,30,60,.06); }
h1 { font-size:1.5rem; margin:0 0 .25rem; } p.lead { margin:0 0 1.5rem; color:var(--muted); }
label { display:block; font-weight:600; margin:1rem 0 .35rem; }
input[type=text], input[type=password] { width:100%; padding:.65rem .75rem; font-size:1rem; border:1px solid #8a93a6; border-radius:8px; }
input:focus, button:focus { outline:3px solid #9db7ff; outline-offset:2px; }
button { font-size:1rem; font-weight:600; padding:.65rem 1.1rem; border-radius:8px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; }
button.quiet { background:#fff; color:var(--accent); padding:.35rem .75rem; font-size:.9rem; }
.actions { margin-top:1.5rem; }
.error { color:var(--bad); background:#fdeeee; border:1px solid #f1c4c4; padding:.6rem .8rem; border-radius:8px; }
table { width:100%; border-collapse:collapse; margin:1rem 0; font-size:.92rem; }
th, td { text-align:left; padding:.5rem .4rem; border-bottom:1px solid var(--line); vertical-align:middle; }
th { color:var(--muted); font-weight:600; }
.tag { display:inline-block; font-size:.75rem; padding:.1rem .45rem; border-radius:999px; background:#e6edff; color:#1f3f99; }
footer { margin-top:1.5rem; font-size:.85rem; color:var(--muted); }
code { font-size:.85rem; }
"#;

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · edge-session</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

/// The login form, with an optional error line.
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default();
    let described = if error.is_empty() {
        ""
    } else {
        " aria-describedby=\"login-error\""
    };
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p class=\"lead\">Your session is renewed when you sign in, and ended everywhere when \
             you sign out.</p>{error}\
             <form method=\"post\" action=\"/login\"{described}>\
             <label for=\"username\">Username</label>\
             <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
             <div class=\"actions\"><button type=\"submit\">Sign in</button></div></form>\
             <footer>edge-session</footer>"
        ),
    )
}

/// One row of "my sessions".
pub struct SessionRow {
    /// Opaque handle.
    pub handle: String,
    /// Creation time, epoch seconds.
    pub created_at: u64,
    /// Last activity, epoch seconds.
    pub last_seen_at: u64,
    /// This browser's session.
    pub current: bool,
}

fn utc(epoch_secs: u64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), UTC.
    let days = (epoch_secs / 86_400) as i64;
    let secs = epoch_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// The signed-in view: who, my sessions, sign out.
pub fn signed_in(user_id: &str, role: &str, sessions: &[SessionRow]) -> String {
    let mut rows = String::new();
    for s in sessions {
        let action = if s.current {
            "<span class=\"tag\">this browser</span>".to_owned()
        } else {
            format!(
                "<form method=\"post\" action=\"/me/sessions/{h}/revoke\">\
                 <button class=\"quiet\" type=\"submit\" aria-label=\"Sign out the session started {c}\">Sign out</button></form>",
                h = escape(&s.handle),
                c = utc(s.created_at)
            )
        };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{action}</td></tr>",
            utc(s.created_at),
            utc(s.last_seen_at)
        );
    }
    layout(
        "Signed in",
        &format!(
            "<h1>Signed in</h1><p class=\"lead\">as <strong id=\"user\">{u}</strong> <span class=\"tag\">{r}</span></p>\
             <h2 style=\"font-size:1.1rem\">Your sessions</h2>\
             <table><thead><tr><th scope=\"col\">Started</th><th scope=\"col\">Last active</th>\
             <th scope=\"col\">Action</th></tr></thead><tbody>{rows}</tbody></table>\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>",
            u = escape(user_id),
            r = escape(role)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn login_page_has_labelled_fields() {
        let page = login(Some("<bad>"));
        assert!(page.contains("<label for=\"username\">") && page.contains("id=\"username\""));
        assert!(page.contains("<label for=\"password\">") && page.contains("type=\"password\""));
        assert!(page.contains("&lt;bad&gt;") && !page.contains("<bad>"));
    }
}
