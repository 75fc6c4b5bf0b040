//! details: the book's details (BEHAVIOUR.md §2, v1).

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::http::{Body, json, last_segment, not_found, respond};

/// Answer one request.
pub fn handle<B>(req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    if req.method() != Method::GET {
        return not_found();
    }
    if path == "/health" {
        return json(StatusCode::OK, &json!({"status": "Details is healthy"}));
    }
    if path != "/details" && !path.starts_with("/details/") {
        return not_found();
    }
    // Decimal only (the original's Ruby parser also takes 0x1A and 010).
    match last_segment(path).parse::<i64>() {
        Ok(id) if path.starts_with("/details/") => respond(StatusCode::OK, "application/json", book(id)),
        _ => json(StatusCode::BAD_REQUEST, &json!({"error": "please provide numeric product id"})),
    }
}

/// v1's record, the same for every id, keys in the original's order (written out: a JSON
/// map would sort them).
fn book(id: i64) -> String {
    format!(
        r#"{{"id":{id},"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(path: &str) -> (u16, serde_json::Value) {
        let rsp = handle(&Request::get(path).body(()).unwrap());
        let status = rsp.status().as_u16();
        assert_eq!(rsp.headers()["content-type"], "application/json");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn the_book_for_any_numeric_id_and_400_otherwise() {
        let (status, book) = get("/details/0").await;
        assert_eq!(status, 200);
        assert_eq!(book["id"], 0);
        assert_eq!(book["ISBN-10"], "1234567890");
        assert_eq!(book["pages"], 200);
        let text = String::from_utf8(
            handle(&Request::get("/details/0").body(()).unwrap())
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        let keys = ["id", "author", "year", "type", "pages", "publisher", "language", "ISBN-10", "ISBN-13"];
        assert!(keys.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
        assert_eq!(get("/details/7").await.1["id"], 7);
        for bad in ["/details/abc", "/details/", "/details"] {
            assert_eq!(get(bad).await, (400, json!({"error": "please provide numeric product id"})), "{bad}");
        }
        assert_eq!(get("/health").await, (200, json!({"status": "Details is healthy"})));
    }
}
