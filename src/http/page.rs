//! Server-rendered pages: the login form and the signed-in view. No
//! JavaScript; every action is a plain form post.

use std::fmt::Write as _;

use crate::client::ClientInfo;

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
:root { color-scheme: light; --ink:#161b26; --muted:#475066; --line:#dde2ea; --accent:#1d4ed8; --accent-dark:#1e3a8a;
  --bg:#eef1f6; --card:#fff; --bad:#9f1c1c; --focus:#1d4ed8; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin:0; min-height:100vh; display:flex; flex-direction:column; align-items:center; padding:6vh 1rem 2rem;
  font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans","DejaVu Sans",sans-serif; color:var(--ink);
  background: linear-gradient(180deg, #dfe6f3 0, var(--bg) 16rem); }
.brand { display:flex; align-items:center; gap:.6rem; margin-bottom:1.25rem; font-weight:700; font-size:1.05rem; letter-spacing:.01em; color:var(--ink); }
.brand svg { display:block; }
main { width:100%; max-width:26rem; padding:2rem 2.25rem 2.25rem; background:var(--card); border:1px solid var(--line);
  border-radius:14px; box-shadow:0 1px 2px rgba(16,24,40,.05), 0 8px 24px rgba(16,24,40,.07); }
main.wide { max-width:50rem; }
h1 { font-size:1.6rem; line-height:1.25; margin:0 0 .35rem; letter-spacing:-.01em; }
h2 { font-size:1.05rem; margin:1.75rem 0 .25rem; }
p.lead { margin:0 0 1.5rem; color:var(--muted); }
label { display:block; font-weight:600; margin:1.1rem 0 .35rem; }
input[type=text], input[type=password] { width:100%; padding:.7rem .8rem; font:inherit; color:var(--ink); background:#fff;
  border:1px solid #7b8599; border-radius:8px; }
input:hover { border-color:#4b5468; }
:focus-visible { outline:3px solid var(--focus); outline-offset:2px; }
input:focus-visible { border-color:var(--accent); }
button { font:inherit; font-weight:600; padding:.7rem 1.2rem; border-radius:8px; border:1px solid var(--accent);
  background:var(--accent); color:#fff; cursor:pointer; }
button:hover { background:var(--accent-dark); border-color:var(--accent-dark); }
button.block { width:100%; margin-top:1.6rem; }
button.quiet { background:#fff; color:var(--accent-dark); padding:.3rem .7rem; font-size:.875rem; }
button.quiet:hover { background:#eef2ff; }
form.inline { margin:0; }
.error { display:flex; gap:.5rem; align-items:flex-start; color:var(--bad); background:#fdf0f0; border:1px solid #efc2c2;
  padding:.65rem .8rem; border-radius:8px; margin:0 0 .5rem; font-weight:500; }
.who { display:flex; align-items:center; gap:.5rem; flex-wrap:wrap; }
table { width:100%; border-collapse:collapse; margin:.75rem 0 1.5rem; font-size:.92rem; }
.muted { color:var(--muted); }
td.device { white-space:normal; min-width:12rem; }
caption { text-align:left; color:var(--muted); padding-bottom:.5rem; font-size:.9rem; }
th, td { text-align:left; padding:.6rem .5rem; border-bottom:1px solid var(--line); vertical-align:middle; white-space:nowrap; }
th:first-child, td:first-child { padding-left:0; } th:last-child, td:last-child { padding-right:0; text-align:right; }
th { color:var(--muted); font-weight:600; font-size:.8rem; text-transform:uppercase; letter-spacing:.04em; }
.tag { display:inline-block; font-size:.78rem; font-weight:600; padding:.12rem .55rem; border-radius:999px; background:#e0e8ff; color:#1e3a8a; white-space:nowrap; }
.tag.here { background:#dcf5e7; color:#14532d; }
.site-footer { margin-top:1.5rem; font-size:.85rem; color:var(--muted); text-align:center; max-width:26rem; }
.visually-hidden { position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0); white-space:nowrap; }
@media (max-width: 30rem) { main { padding:1.5rem 1.25rem; } th:nth-child(2), td:nth-child(2) { display:none; } }
"#;

/// The product mark: a key in a rounded square. Decorative.
const MARK: &str = "<svg width=\"28\" height=\"28\" viewBox=\"0 0 28 28\" aria-hidden=\"true\" focusable=\"false\">\
<rect width=\"28\" height=\"28\" rx=\"7\" fill=\"#1d4ed8\"/>\
<circle cx=\"11\" cy=\"14\" r=\"4.5\" fill=\"none\" stroke=\"#fff\" stroke-width=\"2.4\"/>\
<path d=\"M15.5 14h7.5m-3 0v3.5m-2.6-3.5v2.5\" stroke=\"#fff\" stroke-width=\"2.4\" stroke-linecap=\"round\"/></svg>";

fn layout(title: &str, main_class: &str, body: &str, footer: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light\">\
         <title>{} · edge-session</title><style>{STYLE}</style></head>\
         <body><header class=\"brand\">{MARK}<span>edge-session</span></header>\
         <main class=\"{main_class}\">{body}</main>\
         <footer class=\"site-footer\">{footer}</footer></body></html>\n",
        escape(title)
    )
}

/// The login form, with an optional error line; it posts to `base/login`
/// (`base`: where the node's browser routes are, `""` or `/.edge`) and
/// carries `next`, where to go after signing in.
pub fn login(error: Option<&str>, base: &str, next: Option<&str>) -> String {
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
    let next = next
        .map(|n| {
            format!(
                "<input type=\"hidden\" name=\"next\" value=\"{}\">",
                escape(n)
            )
        })
        .unwrap_or_default();
    layout(
        "Sign in",
        "",
        &format!(
            "<h1>Sign in</h1><p class=\"lead\">Enter your username and password.</p>{error}\
             <form method=\"post\" action=\"{base}/login\"{described}>{next}\
             <label for=\"username\">Username</label>\
             <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" \
             autocapitalize=\"none\" spellcheck=\"false\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
             <button class=\"block\" type=\"submit\">Sign in</button></form>"
        ),
        "Signing out ends your session on every server.",
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
    /// What its sign-in recorded about its client.
    pub client: Option<ClientInfo>,
}

fn utc(epoch_secs: u64) -> String {
    let (y, m, d, hh, mm, _) = crate::record::civil(epoch_secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

/// `<time>` for an instant, shown as UTC.
fn time(epoch_secs: u64) -> String {
    let shown = utc(epoch_secs);
    let iso = format!("{}:00Z", shown.trim_end_matches(" UTC").replace(' ', "T"));
    format!("<time datetime=\"{iso}\">{shown}</time>")
}

/// The signed-in view: who, my sessions (one page of them: `more` links to
/// the rest), sign out; its forms post under `base` (as [`login`]). With
/// `ask_password`, ending another session asks for the password again.
pub fn signed_in(
    user_id: &str,
    role: &str,
    sessions: &[SessionRow],
    more: Option<&str>,
    base: &str,
    ask_password: bool,
) -> String {
    let password = if ask_password {
        "<input type=\"password\" name=\"password\" required autocomplete=\"current-password\" \
         placeholder=\"Your password\" aria-label=\"Your password, to sign out another session\"> "
    } else {
        ""
    };
    let mut rows = String::new();
    for s in sessions {
        let action = if s.current {
            "<span class=\"tag here\">This browser</span>".to_owned()
        } else {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"{base}/me/sessions/{h}/revoke\">\
                 {password}<button class=\"quiet\" type=\"submit\" aria-label=\"Sign out the session started {c}\">Sign out</button></form>",
                h = escape(&s.handle),
                c = utc(s.created_at)
            )
        };
        let device = match &s.client {
            Some(c) => escape(&c.fields().summary()),
            None => "<span class=\"muted\">Unknown device</span>".to_owned(),
        };
        let _ = write!(
            rows,
            "<tr><td class=\"device\">{device}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            time(s.created_at),
            time(s.last_seen_at)
        );
    }
    let role = if role.is_empty() {
        String::new()
    } else {
        format!(" <span class=\"tag\">{}</span>", escape(role))
    };
    let count = match (sessions.len(), more) {
        (n, Some(href)) => format!(
            "The first {n} of your signed-in sessions (<a href=\"{}\">more</a>)",
            escape(href)
        ),
        (1, None) => "1 signed-in session".to_owned(),
        (n, None) => format!("{n} signed-in sessions"),
    };
    layout(
        "Signed in",
        "wide",
        &format!(
            "<h1>Signed in</h1><p class=\"lead who\">as <strong id=\"user\">{u}</strong>{role}</p>\
             <h2 id=\"sessions\">Your sessions</h2>\
             <table aria-labelledby=\"sessions\"><caption>{count}. Sign out any you do not recognise.</caption>\
             <thead><tr><th scope=\"col\">Device</th><th scope=\"col\">Started</th><th scope=\"col\">Last active</th>\
             <th scope=\"col\"><span class=\"visually-hidden\">Action</span></th></tr></thead><tbody>{rows}</tbody></table>\
             <form method=\"post\" action=\"{base}/logout\"><button type=\"submit\">Sign out</button></form>",
            u = escape(user_id),
        ),
        "Times are in UTC.",
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
    fn times_carry_a_machine_readable_datetime() {
        assert_eq!(
            time(1_795_000_000),
            "<time datetime=\"2026-11-18T11:06:00Z\">2026-11-18 11:06 UTC</time>"
        );
    }

    #[test]
    fn login_page_has_labelled_fields() {
        let page = login(Some("<bad>"), "", None);
        assert!(page.contains("<label for=\"username\">") && page.contains("id=\"username\""));
        assert!(page.contains("<label for=\"password\">") && page.contains("type=\"password\""));
        assert!(page.contains("&lt;bad&gt;") && !page.contains("<bad>"));
    }

    #[test]
    fn pages_link_under_the_base_and_carry_next() {
        let page = login(None, "/.edge", Some("/admin?a=1&b=\"x"));
        assert!(page.contains("action=\"/.edge/login\""));
        assert!(page.contains("name=\"next\" value=\"/admin?a=1&amp;b=&quot;x\""));
        let row = SessionRow {
            handle: "h".into(),
            created_at: 0,
            last_seen_at: 0,
            client: None,
            current: false,
        };
        let page = signed_in("u", "", std::slice::from_ref(&row), None, "/.edge", false);
        assert!(!page.contains("name=\"password\""));
        let asking = signed_in("u", "", &[row], None, "/.edge", true);
        assert!(asking.contains("name=\"password\""), "{asking}");
        assert!(page.contains("action=\"/.edge/me/sessions/h/revoke\""));
        assert!(page.contains("action=\"/.edge/logout\""));
    }
}
