//! productpage: the web page and the product API, calling details and reviews (BEHAVIOUR.md
//! §1). Login keeps the user name in a signed `session` cookie and sends it on every outbound
//! call as `end-user`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::http::{Body, Outcome, Upstreams, json, not_found, propagate, respond};

/// Headers copied verbatim onto outbound calls (BEHAVIOUR.md §1.8): reviews' list without
/// the B3 ones (re-emitted only as a valid context, without `x-b3-parentspanid`) and without
/// `end-user` (it comes from the session, never from the client).
fn verbatim() -> impl Iterator<Item = &'static str> {
    crate::reviews::PROPAGATED.into_iter().filter(|h| !h.starts_with("x-b3-") && *h != "end-user")
}

const TIMEOUT: Duration = Duration::from_secs(3);
const DETAILS_ERROR: &str = "Sorry, product details are currently unavailable for this book.";
const REVIEWS_ERROR: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_ERROR: &str = "Sorry, product ratings are currently unavailable for this book.";
const TITLE: &str = "The Comedy of Errors";
const DESCRIPTION: &str = "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

/// The product page service.
#[derive(Clone, Debug)]
pub struct ProductPage {
    upstreams: Upstreams,
    /// Signs the session cookie.
    key: Arc<ring::hmac::Key>,
    /// `request_result{destination_app, response_code}`.
    results: Arc<Mutex<BTreeMap<(&'static str, u16), u64>>>,
}

/// What a backend call gave: the JSON on 200, else the status to report.
type Called = Result<Value, u16>;

impl ProductPage {
    /// A service calling the others through `upstreams`; `secret` signs sessions.
    pub fn new(upstreams: Upstreams, secret: &[u8]) -> Self {
        Self {
            upstreams,
            key: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)),
            results: Arc::default(),
        }
    }

    /// Answer one request (`body` is the request body, read whole).
    pub async fn handle(&self, req: &Request<impl Sized>, body: Bytes) -> Response<Body> {
        let path = req.uri().path();
        let method = req.method();
        match (method, path) {
            (&Method::GET, "/" | "/index.html") => html(StatusCode::OK, index()),
            (&Method::GET, "/health") => respond(StatusCode::OK, "text/html; charset=utf-8", "Product page is healthy"),
            (_, "/login") if method != Method::POST => {
                respond(StatusCode::METHOD_NOT_ALLOWED, "text/html; charset=utf-8", "<h1>Method Not Allowed</h1>\n")
            }
            (&Method::POST, "/login") => self.login(req, &body),
            (&Method::GET, "/logout") => {
                let mut rsp = redirect_back(req);
                rsp.headers_mut()
                    .insert(header::SET_COOKIE, HeaderValue::from_static("session=; Max-Age=0; HttpOnly; Path=/"));
                rsp
            }
            (&Method::GET, "/productpage") => self.page(req).await,
            (&Method::GET, "/api/v1/products") => json(StatusCode::OK, &json!([product()])),
            (&Method::GET, "/metrics") => self.metrics(),
            (&Method::GET, p) if p.starts_with("/static/") => static_file(p),
            (&Method::GET, p) if p.starts_with("/api/v1/products/") => self.api(req, p).await,
            _ => not_found(),
        }
    }

    async fn api(&self, req: &Request<impl Sized>, path: &str) -> Response<Body> {
        let rest = &path["/api/v1/products/".len()..];
        let headers = self.outbound_headers(req);
        let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
        let (result, error) = match what {
            "" => (self.details(id, &headers).await, DETAILS_ERROR),
            "reviews" => (self.reviews(id, &headers).await, REVIEWS_ERROR),
            "ratings" => (self.call("ratings", &format!("/ratings/{id}"), &headers, 1).await, RATINGS_ERROR),
            _ => return not_found(),
        };
        match result {
            Ok(v) => json(StatusCode::OK, &v),
            Err(code) => {
                json(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &json!({"error": error}))
            }
        }
    }

    async fn details(&self, id: &str, headers: &HeaderMap) -> Called {
        self.call("details", &format!("/details/{id}"), headers, 1).await
    }

    /// Two attempts: the original's "bug introduced explicitly for illustration".
    async fn reviews(&self, id: &str, headers: &HeaderMap) -> Called {
        self.call("reviews", &format!("/reviews/{id}"), headers, 2).await
    }

    /// GET with up to `attempts` tries (no backoff); only 200 counts. The status of the last
    /// answer, or 500 when none came.
    async fn call(&self, app: &'static str, path: &str, headers: &HeaderMap, attempts: u32) -> Called {
        let mut last = 500;
        for _ in 0..attempts {
            match self.upstreams.get(app, 9080, path, headers, TIMEOUT).await {
                Outcome::Answered(StatusCode::OK, body) => {
                    self.count(app, 200);
                    return serde_json::from_slice(&body).map_err(|_| 500);
                }
                Outcome::Answered(status, _) => last = status.as_u16(),
                Outcome::Failed(e) => {
                    tracing::info!(app, error = %e, "call failed");
                    last = 500;
                }
            }
            self.count(app, last);
        }
        Err(last)
    }

    fn count(&self, app: &'static str, code: u16) {
        *self.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry((app, code)).or_default() += 1;
    }

    fn metrics(&self) -> Response<Body> {
        let mut out =
            String::from("# HELP request_result_total Backend call results\n# TYPE request_result_total counter\n");
        for ((app, code), n) in self.results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            let _ = writeln!(out, "request_result_total{{destination_app=\"{app}\",response_code=\"{code}\"}} {n}");
        }
        respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", out)
    }

    /// Headers for a call to details, reviews or ratings.
    fn outbound_headers(&self, req: &Request<impl Sized>) -> HeaderMap {
        let incoming = req.headers();
        let mut out = propagate(incoming, verbatim());
        // B3 as the OpenTelemetry propagator re-emits it: a valid context or nothing.
        let hex = |name: &str, len: &[usize]| {
            incoming.get(name).and_then(|v| v.to_str().ok()).filter(|v| {
                len.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit()) && v.bytes().any(|b| b != b'0')
            })
        };
        if let (Some(trace), Some(span)) = (hex("x-b3-traceid", &[16, 32]), hex("x-b3-spanid", &[16])) {
            for (name, value) in [("x-b3-traceid", trace), ("x-b3-spanid", span)] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    out.insert(name, v);
                }
            }
            for name in ["x-b3-sampled", "x-b3-flags"] {
                if let Some(v) = incoming.get(name) {
                    out.insert(name, v.clone());
                }
            }
        }
        if let Some(user) = self.user(incoming)
            && let Ok(v) = HeaderValue::from_str(&user)
        {
            out.insert("end-user", v);
        }
        out
    }

    fn login(&self, req: &Request<impl Sized>, body: &[u8]) -> Response<Body> {
        let form =
            form_field(body, "username").or_else(|| form_field(req.uri().query().unwrap_or("").as_bytes(), "username"));
        let mut rsp = redirect_back(req);
        if let Some(user) = form.filter(|u| !u.is_empty()) {
            let cookie = format!("session={}; HttpOnly; Path=/", self.sign(&user));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                rsp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        rsp
    }

    /// `hex(user).hex(hmac)`.
    fn sign(&self, user: &str) -> String {
        let tag = ring::hmac::sign(&self.key, user.as_bytes());
        format!("{}.{}", to_hex(user.as_bytes()), to_hex(tag.as_ref()))
    }

    /// The logged-in user, from a `session` cookie whose signature holds.
    fn user(&self, headers: &HeaderMap) -> Option<String> {
        let session = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("session="))?;
        let (user, tag) = session.split_once('.')?;
        let user = from_hex(user)?;
        ring::hmac::verify(&self.key, &user, &from_hex(tag)?).ok()?;
        String::from_utf8(user).ok()
    }

    async fn page(&self, req: &Request<impl Sized>) -> Response<Body> {
        let headers = self.outbound_headers(req);
        let user = self.user(req.headers());
        // One after the other, details first.
        let details = self.details("0", &headers).await;
        let reviews = self.reviews("0", &headers).await;
        html(StatusCode::OK, render(user.as_deref(), &details, &reviews))
    }
}

fn product() -> Value {
    json!({"id": 0, "title": TITLE, "descriptionHtml": DESCRIPTION})
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", body)
}

/// 302 to the Referer (or to the page when there is none).
fn redirect_back(req: &Request<impl Sized>) -> Response<Body> {
    let to = req.headers().get(header::REFERER).cloned().unwrap_or(HeaderValue::from_static("/productpage"));
    let mut rsp = respond(StatusCode::FOUND, "text/html; charset=utf-8", "");
    rsp.headers_mut().insert(header::LOCATION, to);
    rsp
}

/// A field of a form (`application/x-www-form-urlencoded`) or query string: `+` is a
/// space, then percent-decoding as mesh-route reads query parameters.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.replace('+', " ");
    mesh_core::request::first_query_value(Some(&text), name).map(std::borrow::Cow::into_owned)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Escape text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STAR: &str = r#"<svg id="glyphicon glyphicon-star" class="w-5 h-5" fill="currentColor" viewBox="0 0 20 20"><path d="M10 1l2.9 6 6.6.9-4.8 4.6 1.2 6.5L10 16l-5.9 3 1.2-6.5L.5 7.9l6.6-.9z"/></svg>"#;
const EMPTY_STAR: &str = r#"<svg class="w-5 h-5" fill="none" stroke="currentColor" viewBox="0 0 20 20"><path d="M10 1l2.9 6 6.6.9-4.8 4.6 1.2 6.5L10 16l-5.9 3 1.2-6.5L.5 7.9l6.6-.9z"/></svg>"#;

/// The page (BEHAVIOUR.md §1.6).
fn render(user: Option<&str>, details: &Called, reviews: &Called) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>Simple Bookstore App</title>\n");
    h.push_str("<link rel=\"stylesheet\" href=\"static/tailwind/tailwind.css\">\n</head>\n<body>\n");
    h.push_str("<nav class=\"bg-gray-800 p-4 text-white\"><span>BookInfo Sample</span>\n");
    match user {
        Some(u) => {
            let _ = writeln!(h, "<span class=\"ml-4\">{}</span> <a href=\"logout\">Sign out</a>", esc(u));
        }
        None => {
            h.push_str("<button id=\"sign-in-button\" onclick=\"document.getElementById('sign-in').showModal()\">Sign in</button>\n");
            h.push_str(
                "<dialog id=\"sign-in\"><h2>Sign in to BookInfo</h2>\n<form method=\"post\" action=\"login\">\n",
            );
            h.push_str("<input type=\"text\" name=\"username\" placeholder=\"User Name\">\n<input type=\"password\" name=\"passwd\" placeholder=\"Password\">\n");
            h.push_str("<button type=\"submit\">Sign in</button>\n</form></dialog>\n");
        }
    }
    h.push_str("</nav>\n<main class=\"p-4\">\n");
    let _ = writeln!(h, "<h1 class=\"text-3xl\">{TITLE}</h1>\n<p>{DESCRIPTION}</p>");
    h.push_str("<section>\n");
    match details {
        Ok(d) => {
            h.push_str("<h2 class=\"text-2xl\">Book Details</h2>\n<table>\n");
            h.push_str("<tr><th>ISBN-10</th><th>Publisher</th><th>Pages</th><th>Type</th><th>Language</th></tr>\n");
            let f = |k: &str| {
                esc(&match &d[k] {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f("ISBN-10"),
                f("publisher"),
                f("pages"),
                f("type"),
                f("language")
            );
            h.push_str("</table>\n");
        }
        Err(_) => {
            let _ = writeln!(
                h,
                "<p class=\"text-2xl text-red-500\">Error fetching product details</p>\n<p class=\"text-lg text-gray-600\">{DETAILS_ERROR}</p>"
            );
        }
    }
    h.push_str("</section>\n<section>\n");
    match reviews {
        Ok(r) => {
            h.push_str("<h2 class=\"text-2xl\">Book Reviews</h2>\n");
            for review in r["reviews"].as_array().into_iter().flatten() {
                h.push_str("<div class=\"review\">\n");
                if let Some(rating) = review.get("rating") {
                    match (rating.get("stars").and_then(Value::as_i64), rating.get("error")) {
                        (Some(stars), _) if stars != 0 => {
                            let stars = stars.clamp(0, 5);
                            let color = rating["color"].as_str().unwrap_or("black");
                            let _ = write!(h, "<div class=\"flex gap-x-1 text-{}-500\">", esc(color));
                            for i in 0..5 {
                                h.push_str(if i < stars { STAR } else { EMPTY_STAR });
                            }
                            h.push_str("</div>\n");
                        }
                        (_, Some(_)) => {
                            h.push_str("<p class=\"text-red-500\">Ratings service is currently unavailable</p>\n")
                        }
                        _ => {}
                    }
                }
                let _ = writeln!(
                    h,
                    "<blockquote>\"{}\"</blockquote>\n<small>{}</small>",
                    esc(review["text"].as_str().unwrap_or("")),
                    esc(review["reviewer"].as_str().unwrap_or(""))
                );
                h.push_str("</div>\n");
            }
            let mut served = format!("Reviews served by: {}", esc(r["podname"].as_str().unwrap_or("")));
            if let Some(c) = r["clustername"].as_str().filter(|c| *c != "null") {
                let _ = write!(served, " on cluster {}", esc(c));
            }
            let _ = writeln!(h, "<p class=\"served-by\">{served}</p>");
        }
        Err(_) => {
            let _ = writeln!(
                h,
                "<p class=\"text-2xl text-red-500\">Error fetching product reviews</p>\n<p class=\"text-lg text-gray-600\">{REVIEWS_ERROR}</p>"
            );
        }
    }
    h.push_str("</section>\n</main>\n</body>\n</html>\n");
    h
}

/// The landing page (BEHAVIOUR.md §1.7).
fn index() -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Simple Bookstore App</title></head>\n<body>\n",
    );
    h.push_str(
        "<p>Hello! This is a simple bookstore application consisting of three services as shown below</p>\n<table>\n",
    );
    h.push_str("<tr><th>name</th><th>endpoint</th><th>children</th></tr>\n");
    h.push_str("<tr><td>productpage</td><td>details</td><td>details</td></tr>\n");
    h.push_str("<tr><td>productpage</td><td>reviews</td><td>ratings</td></tr>\n</table>\n");
    h.push_str("<p><a href=\"/productpage?u=normal\">Normal user</a></p>\n<p><a href=\"/productpage?u=test\">Test user</a></p>\n</body>\n</html>\n");
    h
}

/// The two static files the page uses.
fn static_file(path: &str) -> Response<Body> {
    match path {
        "/static/tailwind/tailwind.css" => respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            ".text-red-500{color:#ef4444}.text-gray-600{color:#4b5563}.text-2xl{font-size:1.5rem}.text-3xl{font-size:1.875rem}.flex{display:flex}.gap-x-1{column-gap:.25rem}.w-5{width:1.25rem}.h-5{height:1.25rem}.p-4{padding:1rem}.ml-4{margin-left:1rem}.bg-gray-800{background:#1f2937}.text-white{color:#fff}\n",
        ),
        // A 1x1 transparent PNG stands in for Izzy.
        "/static/img/izzy.png" => respond(
            StatusCode::OK,
            "image/png",
            Bytes::from_static(&[
                0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
                0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00,
                0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01,
                0x0d, 0x0a, 0x2d, 0xb4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
            ]),
        ),
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp() -> ProductPage {
        ProductPage::new(Upstreams::default(), b"test secret")
    }

    #[test]
    fn sessions_are_signed_and_forgeries_ignored() {
        let p = pp();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; session={}", p.sign("jason")).parse().unwrap());
        assert_eq!(p.user(&h).as_deref(), Some("jason"));
        let forged = format!("session={}.{}", to_hex(b"admin"), to_hex(&[0; 32]));
        h.insert(header::COOKIE, forged.parse().unwrap());
        assert_eq!(p.user(&h), None);
        assert_eq!(
            ProductPage::new(Upstreams::default(), b"other").user(&{
                let mut h = HeaderMap::new();
                h.insert(header::COOKIE, format!("session={}", p.sign("jason")).parse().unwrap());
                h
            }),
            None
        );
    }

    #[test]
    fn outbound_headers_propagate_b3_without_parent_and_end_user_only_from_the_session() {
        let p = pp();
        let req = Request::get("/productpage")
            .header("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124")
            .header("x-b3-spanid", "a2fb4a1d1a96d312")
            .header("x-b3-parentspanid", "0020000000000001")
            .header("x-b3-sampled", "1")
            .header("x-request-id", "abc")
            .header("sw8", "1-xyz")
            .header("end-user", "spoofed")
            .header("cookie", format!("session={}", p.sign("jason")))
            .body(())
            .unwrap();
        let h = p.outbound_headers(&req);
        assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(!h.contains_key("x-b3-parentspanid"));
        assert_eq!(
            (&h["x-request-id"], &h["sw8"], &h["end-user"]),
            (
                &"abc".parse::<HeaderValue>().unwrap(),
                &"1-xyz".parse::<HeaderValue>().unwrap(),
                &"jason".parse::<HeaderValue>().unwrap()
            )
        );
        // An invalid B3 context is not re-emitted at all.
        let req = Request::get("/").header("x-b3-traceid", "zz").header("x-b3-sampled", "1").body(()).unwrap();
        let h = p.outbound_headers(&req);
        assert!(!h.contains_key("x-b3-traceid") && !h.contains_key("x-b3-sampled") && !h.contains_key("end-user"));
    }

    #[test]
    fn the_page_draws_stars_errors_and_the_sign_in_form() {
        let reviews = |rating: Option<Value>| -> Called {
            let mut r = json!({"reviewer": "Reviewer1", "text": "t"});
            if let Some(x) = rating {
                r["rating"] = x;
            }
            Ok(json!({"id": "0", "podname": "reviews-v2-1", "clustername": "null", "reviews": [r.clone(), r]}))
        };
        let details = Ok(
            json!({"ISBN-10": "1234567890", "publisher": "PublisherA", "pages": 200, "type": "paperback", "language": "English"}),
        );
        let v1 = render(None, &details, &reviews(None));
        assert!(
            v1.contains("<title>Simple Bookstore App</title>")
                && v1.contains("Book Details")
                && v1.contains("Sign in to BookInfo")
        );
        assert_eq!(v1.matches("glyphicon-star").count(), 0);
        let v3 = render(Some("jason"), &details, &reviews(Some(json!({"stars": 4, "color": "red"}))));
        assert_eq!(v3.matches("glyphicon-star").count(), 8);
        assert!(
            v3.contains("<div class=\"flex gap-x-1 text-red-500\">")
                && v3.contains("Sign out")
                && v3.contains("Reviews served by: reviews-v2-1")
        );
        let failed =
            render(None, &Err(500), &reviews(Some(json!({"error": "Ratings service is currently unavailable"}))));
        assert!(failed.contains("Error fetching product details") && failed.contains(DETAILS_ERROR));
        assert_eq!(failed.matches("Ratings service is currently unavailable").count(), 2);
        let no_reviews = render(None, &details, &Err(503));
        assert!(no_reviews.contains("Error fetching product reviews") && no_reviews.contains(REVIEWS_ERROR));
    }

    #[test]
    fn the_verbatim_list_is_the_one_istio_documents() {
        let names: Vec<_> = verbatim().collect();
        assert_eq!(
            names,
            [
                "x-request-id",
                "x-ot-span-context",
                "x-datadog-trace-id",
                "x-datadog-parent-id",
                "x-datadog-sampling-priority",
                "traceparent",
                "tracestate",
                "x-cloud-trace-context",
                "grpc-trace-bin",
                "sw8",
                "user-agent",
                "cookie",
                "authorization",
                "jwt",
            ]
        );
    }

    #[test]
    fn form_fields_decode() {
        assert_eq!(form_field(b"username=jason+x%21&passwd=p", "username").as_deref(), Some("jason x!"));
        assert_eq!(from_hex(&to_hex(b"\x00\xffjason")).unwrap(), b"\x00\xffjason");
    }
}
