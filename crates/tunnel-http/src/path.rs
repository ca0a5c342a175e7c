//! Request paths as a hop matches and forwards them.
//!
//! A location such as `/admin` guards everything under it only if every spelling of
//! `/admin` is recognised as one: `/%61dmin`, `//admin`, `/./admin`, `/x/../admin` all reach
//! the same file on most services. So the path is normalised once, matched in that form and
//! forwarded in that form, and the service never sees a spelling the hop did not route.
//! Spellings that services disagree about (an encoded `/` or `\`, an encoded dot segment,
//! NUL) are refused rather than guessed.

use crate::Error;

/// The one spelling of `raw` (a request target's path, no query): unreserved characters
/// percent-decoded, other escapes in upper case, empty segments merged, `.` and `..`
/// resolved. A trailing slash is kept, as it is part of the resource's name.
pub fn normalize(raw: &str) -> Result<String, Error> {
    if raw == "*" {
        return Ok(raw.to_owned()); // OPTIONS *: the server as a whole
    }
    let rest = raw.strip_prefix('/').ok_or(Error::NotAbsolute)?;
    let mut out: Vec<String> = Vec::new();
    let mut segments = rest.split('/').peekable();
    let mut trailing_slash = false;
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        let (seg, had_encoded_dot) = decode_segment(seg)?;
        match seg.as_str() {
            "." | ".." if had_encoded_dot => return Err(Error::EncodedDotSegment),
            "." => trailing_slash = last,
            ".." => {
                out.pop().ok_or(Error::AboveRoot)?;
                trailing_slash = last;
            }
            "" => trailing_slash = last,
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(raw.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

/// The form a normalised path is matched against locations in: each segment's `;params`
/// dropped, since servlet containers serve `/admin;x/` as `/admin/`. Only ever makes a
/// path look *more* like a guarded location, never less.
pub fn match_key(normalized: &str) -> std::borrow::Cow<'_, str> {
    if !normalized.contains(';') {
        return normalized.into();
    }
    let mut out = String::with_capacity(normalized.len());
    for (i, seg) in normalized.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split_once(';').map_or(seg, |(name, _)| name));
    }
    out.into()
}

/// One segment with unreserved escapes decoded; also whether a `%2E` was among them.
fn decode_segment(seg: &str) -> Result<(String, bool), Error> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut encoded_dot = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(Error::BadEscape)?;
                let (hi, lo) = (hex_value(hex[0]), hex_value(hex[1]));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Error::BadEscape);
                };
                let b = hi << 4 | lo;
                match b {
                    b'/' => return Err(Error::EncodedSlash),
                    b'\\' => return Err(Error::Backslash),
                    0 => return Err(Error::Nul),
                    b'.' => {
                        encoded_dot = true;
                        out.push('.');
                    }
                    _ if is_unreserved(b) => out.push(char::from(b)),
                    _ => {
                        out.push('%');
                        out.push(char::from(hex[0].to_ascii_uppercase()));
                        out.push(char::from(hex[1].to_ascii_uppercase()));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(Error::Backslash),
            // The http crate lets bytes past ASCII through (UTF-8 typed into curl, say). Each
            // becomes its escape, the one spelling a service decodes back to the bytes sent
            // (one `char` per byte would send it other bytes). Found by fuzz/http_head.
            b if !b.is_ascii() => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
                i += 1;
            }
            b => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok((out, encoded_dot))
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn every_spelling_of_admin_is_admin() {
        for raw in [
            "/admin/",
            "/%61dmin/",
            "/%61%64%6D%69%6e/",
            "//admin/",
            "/./admin/",
            "/x/../admin/",
            "/x/y/../../admin/",
            "/admin/.",
            "/admin/x/..",
            "///admin//",
        ] {
            assert_eq!(ok(raw), "/admin/", "{raw}");
        }
        assert_eq!(ok("/admin"), "/admin");
        assert_eq!(ok("/admin/."), "/admin/");
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (raw, err) in [
            ("/%2e/admin/", Error::EncodedDotSegment),
            ("/%2E%2e/admin", Error::EncodedDotSegment),
            ("/x/.%2e/admin", Error::EncodedDotSegment),
            ("/pub/..%2fadmin/", Error::EncodedSlash),
            ("/a%2Fb", Error::EncodedSlash),
            ("/a\\b", Error::Backslash),
            ("/a%5cb", Error::Backslash),
            ("/a%00", Error::Nul),
            ("/a%2", Error::BadEscape),
            ("/a%zz", Error::BadEscape),
            ("/..", Error::AboveRoot),
            ("/a/../../b", Error::AboveRoot),
            ("admin", Error::NotAbsolute),
            ("", Error::NotAbsolute),
        ] {
            assert_eq!(normalize(raw), Err(err), "{raw}");
        }
    }

    #[test]
    fn other_escapes_stay_escaped_in_one_case_and_dots_in_names_stay() {
        assert_eq!(ok("/caf%c3%a9/%20x"), "/caf%C3%A9/%20x");
        // Raw UTF-8 gets the same spelling as its escapes, and keeps it when normalised again.
        assert_eq!(ok("/café"), "/caf%C3%A9");
        assert_eq!(ok(&ok("/café")), "/caf%C3%A9");
        assert_eq!(ok("/file%2ehtml"), "/file.html");
        assert_eq!(ok("/a..b/.c/..d"), "/a..b/.c/..d");
        assert_eq!(ok("/%7Euser"), "/~user");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("//"), "/");
        assert_eq!(ok("*"), "*");
    }

    #[test]
    fn match_key_drops_segment_parameters() {
        assert_eq!(match_key("/admin;x=1/page"), "/admin/page");
        assert_eq!(match_key("/app;jsessionid=abc"), "/app");
        assert_eq!(match_key("/plain/path"), "/plain/path");
    }
}
