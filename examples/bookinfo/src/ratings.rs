//! ratings: each reviewer's stars (BEHAVIOUR.md §4: v1 in memory, and the fault-demo
//! variants v-faulty and v-delayed).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

use crate::http::{Body, json, not_found};

/// Which ratings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// In memory; POST replaces an id's ratings.
    V1,
    /// Half of the GETs get 503.
    Faulty,
    /// Half of the GETs are answered after 7 s.
    Delayed,
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" => Ok(Self::V1),
            "v-faulty" => Ok(Self::Faulty),
            "v-delayed" => Ok(Self::Delayed),
            other => {
                Err(format!("ratings {other}: this build has v1, v-faulty and v-delayed (v2 needs MongoDB or MySQL)"))
            }
        }
    }
}

/// The ratings service's state.
#[derive(Clone, Debug)]
pub struct Ratings {
    variant: Variant,
    stored: Arc<Mutex<HashMap<u64, Value>>>,
    rng: Arc<Mutex<StdRng>>,
}

impl Ratings {
    /// A fresh service; `seed` drives the variants' coin flips.
    pub fn new(variant: Variant, seed: u64) -> Self {
        Self { variant, stored: Arc::default(), rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))) }
    }

    fn flip(&self) -> bool {
        self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random_bool(0.5)
    }

    /// Answer one request (`body` is the request body, read whole).
    pub async fn handle(&self, method: &Method, path: &str, body: Bytes) -> Response<Body> {
        if path == "/health" && method == Method::GET {
            return json(StatusCode::OK, &json!({"status": "Ratings is healthy"}));
        }
        let Some(rest) = path.strip_prefix("/ratings/") else { return not_found() };
        // The id is the last segment's leading digits (`12abc` is 12).
        let digits: String = rest.rsplit('/').next().unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
        let Ok(id) = digits.parse::<u64>() else {
            return json(StatusCode::BAD_REQUEST, &json!({"error": "please provide numeric product ID"}));
        };
        match *method {
            Method::GET => {
                match self.variant {
                    Variant::Faulty if self.flip() => {
                        return json(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "Service unavailable"}));
                    }
                    Variant::Delayed if self.flip() => tokio::time::sleep(Duration::from_secs(7)).await,
                    _ => {}
                }
                let stored = self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned();
                json(
                    StatusCode::OK,
                    &stored.unwrap_or_else(|| json!({"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}})),
                )
            }
            Method::POST => match serde_json::from_slice::<Value>(&body) {
                Ok(ratings @ Value::Object(_)) => {
                    let record = json!({"id": id, "ratings": ratings});
                    self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, record.clone());
                    json(StatusCode::OK, &record)
                }
                _ => json(StatusCode::BAD_REQUEST, &json!({"error": "please provide valid ratings JSON"})),
            },
            _ => not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn call(r: &Ratings, method: Method, path: &str, body: &str) -> (u16, Value) {
        let rsp = r.handle(&method, path, Bytes::from(body.to_string())).await;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn v1_serves_defaults_and_keeps_posted_ratings() {
        let r = Ratings::new(Variant::V1, 1);
        assert_eq!(
            call(&r, Method::GET, "/ratings/0", "").await,
            (200, json!({"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}))
        );
        assert_eq!(call(&r, Method::GET, "/ratings/12abc", "").await.1["id"], 12);
        assert_eq!(
            call(&r, Method::GET, "/ratings/x", "").await,
            (400, json!({"error": "please provide numeric product ID"}))
        );
        let posted = call(&r, Method::POST, "/ratings/3", r#"{"Reviewer1": 3, "Reviewer2": 1}"#).await;
        assert_eq!(posted, (200, json!({"id": 3, "ratings": {"Reviewer1": 3, "Reviewer2": 1}})));
        assert_eq!(call(&r, Method::GET, "/ratings/3", "").await.1["ratings"]["Reviewer2"], 1);
        assert_eq!(call(&r, Method::POST, "/ratings/3", "nope").await.0, 400);
        assert_eq!(call(&r, Method::GET, "/health", "").await, (200, json!({"status": "Ratings is healthy"})));
    }

    #[tokio::test(start_paused = true)]
    async fn the_fault_variants_fail_or_wait_about_half_the_time() {
        let faulty = Ratings::new(Variant::Faulty, 7);
        let mut failures = 0;
        for _ in 0..200 {
            if call(&faulty, Method::GET, "/ratings/0", "").await.0 == 503 {
                failures += 1;
            }
        }
        assert!((70..=130).contains(&failures), "{failures} of 200");
        let delayed = Ratings::new(Variant::Delayed, 7);
        let start = tokio::time::Instant::now();
        for _ in 0..20 {
            assert_eq!(call(&delayed, Method::GET, "/ratings/0", "").await.0, 200);
        }
        let slept = start.elapsed().as_secs();
        assert!(slept.is_multiple_of(7) && (21..=119).contains(&slept), "slept {slept} s over 20 requests");
    }
}
