//! HTML helpers: escaping and the page layout. Server-rendered, phone-friendly, a few lines of
//! JavaScript for upload/read progress only.

/// Escapes text for HTML element content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

const CSS: &str = r#"
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1b2330}
header{background:#0b5cad;color:#fff;padding:.8rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}
header a,header button{color:#fff}main{max-width:980px;margin:0 auto;padding:1rem}
section{background:#fff;border-radius:8px;padding:1rem;margin-bottom:1rem;box-shadow:0 1px 2px #0002;overflow-x:auto}
h1{font-size:1.2rem;margin:0}h2{font-size:1.05rem;margin-top:0}table{border-collapse:collapse;width:100%;font-size:.9rem}
td,th{padding:.35rem .5rem;border-bottom:1px solid #e3e7eb;text-align:left;vertical-align:top}
input,select,button{font:inherit;padding:.45rem .6rem;margin:.2rem 0;max-width:100%}button{cursor:pointer;border-radius:6px;border:1px solid #0b5cad;background:#0b5cad;color:#fff}
button.secondary{background:#fff;color:#0b5cad}button.danger{background:#b3261e;border-color:#b3261e}
form.inline{display:inline}.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
.emergency{border:3px solid #b3261e;background:#fde8e7}.denied td{background:#fde8e7}.msg{padding:.6rem .8rem;border-radius:6px;margin-bottom:1rem;overflow-wrap:anywhere}.err{background:#fde8e7;color:#8a1c14}.ok{background:#e6f4ea;color:#14532d}
code{font-size:.8rem;word-break:break-all}pre{white-space:pre-wrap;word-break:break-word;background:#f0f3f6;padding:.6rem;border-radius:6px}
.busy{display:none;color:#0b5cad}form.working .busy{display:inline}
@media (max-width:600px){td,th{font-size:.8rem;padding:.3rem}header h1{font-size:1rem}.row>label{flex:1 1 100%}input:not([type=file]),select{width:100%}}
"#;

/// A whole page. `user` shows the logout button; `body` is trusted HTML built with [`esc`].
pub(super) fn page(title: &str, user: Option<(&str, &str)>, body: &str) -> String {
    let nav = match user {
        Some((name, csrf)) => format!(
            r#"<span>{}</span> <a href="/tokens">Tokens</a> <form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" value="{}"><button class="secondary">Log out</button></form>"#,
            esc(name),
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{t} · ehr-share</title><style>{CSS}</style></head><body><header><h1>ehr-share · {t}</h1><div>{nav}</div></header><main>{body}</main>
<script>document.querySelectorAll('form[data-busy]').forEach(f=>f.addEventListener('submit',()=>{{f.classList.add('working');f.querySelectorAll('button').forEach(b=>b.disabled=true)}}))</script>
</body></html>"#,
        t = esc(title)
    )
}

/// A message box.
pub(super) fn msg(ok: bool, text: &str) -> String {
    format!(
        r#"<div class="msg {}" role="status">{}</div>"#,
        if ok { "ok" } else { "err" },
        esc(text)
    )
}

/// A short form of a hex id for tables.
pub(super) fn short(s: &str) -> String {
    if s.len() > 14 {
        format!("{}…{}", &s[..8], &s[s.len() - 4..])
    } else {
        s.to_owned()
    }
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM`.
pub(super) fn time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for the Unix era.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(time(0), "1970-01-01 00:00");
        assert_eq!(time(1_795_545_744), "2026-11-24 18:42");
        assert_eq!(short("0x1234567890abcdef"), "0x123456…cdef");
    }
}
