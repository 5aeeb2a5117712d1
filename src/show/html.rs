//! The `.html` form of `show`: one self-contained page (no outside resources: inline SVG,
//! style and script) with the picture, a panel that shows the details (`<title>`) of the
//! shape under the pointer, and the whole event log.
//!
//! What it keeps true: the page is well-formed (the SVG as `svg::render` made it, every
//! other text escaped) and works without the network; it adds nothing to the picture that
//! the SVG does not say (the panel shows the SVG's own titles).

use super::svg::esc;

const STYLE: &str = "body{font-family:sans-serif;margin:16px;color:#222}\
#detail{position:sticky;top:0;background:#fffbe6;border:1px solid #e0d28a;padding:6px 10px;\
font-family:monospace;font-size:12px;white-space:pre-wrap;min-height:3.6em;z-index:1}\
.picture{overflow-x:auto}\
pre{font-size:12px;background:#f6f6f6;padding:8px;overflow-x:auto}";

/// Shows the `<title>` of the innermost shape under the pointer in `#detail`.
const SCRIPT: &str = "const d=document.getElementById('detail');\
document.querySelector('.picture svg').addEventListener('mouseover',e=>{\
for(let n=e.target;n&&n.tagName!=='svg';n=n.parentNode){\
const t=Array.from(n.children||[]).find(c=>c.tagName==='title');\
if(t){d.textContent=t.textContent;return;}}});";

/// The page: `title`, the picture `svg`, and the event `log`.
pub fn page(title: &str, svg: &str, log: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>mmfuzz show: {t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>mmfuzz show: {t}</h1>\n<div id=\"detail\">Point at a shape of the picture to see its details here.</div>\n<div class=\"picture\">\n{svg}</div>\n<details>\n<summary>Event log (mmfuzz replay --events)</summary>\n<pre>{log}</pre>\n</details>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        t = esc(title),
        log = esc(log)
    )
}
