//! Route patterns (`/orders/:id`) and the table of routes the HTTP trigger
//! listener serves.
//!
//! A pattern is a list of segments, each literal or a `:name` parameter.
//! Two routes conflict when they have the same method and the same shape
//! (literals equal, parameters in the same places): a request could not
//! tell them apart. A request matches the route with the most literal
//! segments first (`/orders/open` before `/orders/:id`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Longest `api_path` accepted.
pub const MAX_PATH_BYTES: usize = 1024;
/// Most segments in one `api_path`.
pub const MAX_SEGMENTS: usize = 32;
/// Routes the listener serves, across every owner: one more is refused.
pub const MAX_ROUTES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed `api_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    /// Reads an `api_path` as iii writes it: with or without the leading
    /// `/` (`greet` and `/greet` are one route), `:name` for a parameter.
    pub fn parse(api_path: &str) -> Result<Self, String> {
        if api_path.len() > MAX_PATH_BYTES {
            return Err(format!(
                "api_path is {} bytes; the limit is {MAX_PATH_BYTES}",
                api_path.len()
            ));
        }
        let mut segments = Vec::new();
        let mut names = Vec::new();
        for part in api_path.split('/').filter(|part| !part.is_empty()) {
            let segment = match part.strip_prefix(':') {
                Some(name) => {
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!(
                            "path parameter ':{name}' must be a name of letters, digits and '_' (as in /orders/:order_id)"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("path parameter ':{name}' appears twice"));
                    }
                    names.push(name);
                    Segment::Param(name.to_owned())
                }
                None => {
                    if let Some(bad) = part.chars().find(|c| !is_path_char(*c)) {
                        return Err(format!(
                            "api_path segment '{part}' contains {bad:?}; use letters, digits and - . _ ~ (or :name for a parameter)"
                        ));
                    }
                    Segment::Literal(part.to_owned())
                }
            };
            segments.push(segment);
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!(
                "api_path has {} segments; the limit is {MAX_SEGMENTS}",
                segments.len()
            ));
        }
        Ok(Self { segments })
    }

    /// The path as served: `/` and the segments, parameters as `:name`.
    pub fn path(&self) -> String {
        let mut path = String::new();
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Literal(text) => path.push_str(text),
                Segment::Param(name) => {
                    path.push(':');
                    path.push_str(name);
                }
            }
        }
        if path.is_empty() {
            path.push('/');
        }
        path
    }

    /// The shape two conflicting patterns share: literals, and `:` for
    /// every parameter whatever its name.
    fn shape(&self) -> Vec<Option<&str>> {
        self.segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => Some(text.as_str()),
                Segment::Param(_) => None,
            })
            .collect()
    }

    fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|segment| matches!(segment, Segment::Literal(_)))
            .count()
    }

    /// The parameters of `path` (percent-decoded), if it matches.
    fn captures(&self, path: &[&str]) -> Option<Vec<(String, String)>> {
        if path.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(path) {
            match segment {
                Segment::Literal(text) => {
                    if text != part {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = percent_encoding::percent_decode_str(part)
                        .decode_utf8()
                        .ok()?
                        .into_owned();
                    params.push((name.clone(), value));
                }
            }
        }
        Some(params)
    }
}

/// Characters a literal segment may hold: RFC 3986's unreserved set.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// One served route and what it calls.
#[derive(Debug)]
pub struct Route<T> {
    pub method: http::Method,
    pub pattern: Pattern,
    /// Who holds it: the owner key and trigger id that registered it.
    pub holder: (String, String),
    /// The holder as a conflict names it (`worker:orders(…)`).
    pub label: String,
    /// The identity behind the holder (`worker:orders`): its other
    /// connections — a replica, or the same worker reconnected — may take
    /// the route over; another identity may not.
    pub identity: String,
    pub target: T,
}

/// What a request path found.
pub enum Found<T> {
    Route {
        route: Arc<Route<T>>,
        params: Vec<(String, String)>,
    },
    /// The path is served, but not for this method; these are.
    WrongMethod(Vec<http::Method>),
    NotFound,
}

/// Why a route was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "{method} {path} is already served by trigger '{trigger}' of {owner}; choose another api_path or method, or unregister that trigger first"
    )]
    Conflict {
        method: String,
        path: String,
        trigger: String,
        owner: String,
    },
    #[error("the HTTP trigger listener serves at most {limit} routes; unregister one first")]
    Full { limit: usize },
}

/// Every route, read on each request and changed on registration.
pub struct Routes<T> {
    routes: RwLock<Vec<Arc<Route<T>>>>,
    /// Most routes held; [`MAX_ROUTES`] unless a test chooses.
    limit: usize,
}

impl<T> Default for Routes<T> {
    fn default() -> Self {
        Self::with_limit(MAX_ROUTES)
    }
}

impl<T> Routes<T> {
    /// A table that refuses routes beyond `limit`.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            routes: RwLock::new(Vec::new()),
            limit,
        }
    }

    /// Adds a route, replacing the one its holder had at the same place;
    /// another holder's route of the same shape is a conflict.
    pub fn insert(&self, route: Route<T>) -> Result<(), RouteError> {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let shape = route.pattern.shape();
        let same_place =
            |held: &Route<T>| held.method == route.method && held.pattern.shape() == shape;
        if let Some(held) = routes
            .iter()
            .find(|held| same_place(held) && held.identity != route.identity)
        {
            return Err(RouteError::Conflict {
                method: route.method.to_string(),
                path: held.pattern.path(),
                trigger: held.holder.1.clone(),
                owner: held.label.clone(),
            });
        }
        // A holder re-registering its trigger moves it (its old place
        // goes); the same identity registering the same place takes it.
        routes.retain(|held| held.holder != route.holder && !same_place(held));
        if routes.len() >= self.limit {
            return Err(RouteError::Full { limit: self.limit });
        }
        // Most specific first: a request takes the first match.
        let literals = route.pattern.literals();
        let at = routes.partition_point(|held| held.pattern.literals() >= literals);
        routes.insert(at, Arc::new(route));
        Ok(())
    }

    /// Removes the route `holder` registered, if `still` says it is the
    /// registration being removed (not one that replaced it since).
    pub fn remove_if(&self, holder: &(String, String), still: impl Fn(&T) -> bool) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|held| !(held.holder == *holder && still(&held.target)));
    }

    /// The route for `method` and `path`.
    pub fn find(&self, method: &http::Method, path: &str) -> Found<T> {
        let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let mut allowed = Vec::new();
        for route in routes.iter() {
            let Some(params) = route.pattern.captures(&parts) else {
                continue;
            };
            // HEAD is served by a GET route, as HTTP expects.
            if route.method == *method
                || (*method == http::Method::HEAD && route.method == http::Method::GET)
            {
                return Found::Route {
                    route: route.clone(),
                    params,
                };
            }
            if !allowed.contains(&route.method) {
                allowed.push(route.method.clone());
            }
        }
        if allowed.is_empty() {
            Found::NotFound
        } else {
            Found::WrongMethod(allowed)
        }
    }

    /// Routes served.
    pub fn len(&self) -> usize {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameters as an object of strings.
pub fn params_object(params: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    params
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::Value::from(value.as_str())))
        .collect()
}

/// Query parameters as an object: one value as a string (iii's shape); a
/// repeated name keeps its last value, as iii does.
pub fn query_object(query: Option<&str>) -> serde_json::Map<String, serde_json::Value> {
    let mut map: HashMap<String, String> = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        map.insert(name.into_owned(), value.into_owned());
    }
    map.into_iter()
        .map(|(name, value)| (name, serde_json::Value::String(value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn route(method: Method, path: &str, holder: (&str, &str)) -> Route<&'static str> {
        Route {
            method,
            pattern: Pattern::parse(path).unwrap(),
            holder: (holder.0.into(), holder.1.into()),
            label: holder.0.into(),
            identity: holder.0.split('#').next().unwrap_or_default().into(),
            target: "f",
        }
    }

    #[test]
    fn paths_read_as_iii_writes_them_and_refuse_what_cannot_be_served() {
        assert_eq!(Pattern::parse("greet").unwrap().path(), "/greet");
        assert_eq!(
            Pattern::parse("/orders/:id/").unwrap().path(),
            "/orders/:id"
        );
        assert_eq!(Pattern::parse("/").unwrap().path(), "/");
        for (bad, why) in [
            ("/a/:", "must be a name"),
            ("/a/:x/:x", "appears twice"),
            ("/a b", "contains ' '"),
            ("/a?x=1", "contains '?'"),
            ("/%2e%2e", "contains '%'"),
        ] {
            let error = Pattern::parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(
            Pattern::parse(&"/a".repeat(40))
                .unwrap_err()
                .contains("segments")
        );
        assert!(
            Pattern::parse(&"a".repeat(2000))
                .unwrap_err()
                .contains("bytes")
        );
    }

    #[test]
    fn the_most_specific_route_answers_and_parameters_are_decoded() {
        let routes = Routes::default();
        routes
            .insert(route(Method::GET, "/orders/:id", ("w1", "t1")))
            .unwrap();
        routes
            .insert(route(Method::GET, "/orders/open", ("w1", "t2")))
            .unwrap();
        routes
            .insert(route(Method::POST, "/orders", ("w1", "t3")))
            .unwrap();
        let Found::Route { route, params } = routes.find(&Method::GET, "/orders/open") else {
            panic!("no route");
        };
        assert_eq!(route.holder.1, "t2");
        assert!(params.is_empty());
        let Found::Route { route, params } = routes.find(&Method::GET, "/orders/a%20b") else {
            panic!("no route");
        };
        assert_eq!(route.holder.1, "t1");
        assert_eq!(params, [("id".to_owned(), "a b".to_owned())]);
        assert!(matches!(
            routes.find(&Method::HEAD, "/orders/1"),
            Found::Route { .. }
        ));
        let Found::WrongMethod(allowed) = routes.find(&Method::DELETE, "/orders") else {
            panic!("expected 405");
        };
        assert_eq!(allowed, [Method::POST]);
        assert!(matches!(
            routes.find(&Method::GET, "/nowhere"),
            Found::NotFound
        ));
        assert!(matches!(
            routes.find(&Method::GET, "/orders/1/x"),
            Found::NotFound
        ));
    }

    #[test]
    fn another_owners_route_of_the_same_shape_is_a_conflict_naming_it() {
        let routes = Routes::default();
        routes
            .insert(route(Method::POST, "/orders/:id", ("worker:a", "t1")))
            .unwrap();
        let error = routes
            .insert(route(Method::POST, "/orders/:order", ("worker:b", "t9")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("POST /orders/:id") && error.contains("'t1' of worker:a"),
            "{error}"
        );
        // Another method, or the same holder moving its trigger, is fine.
        routes
            .insert(route(Method::GET, "/orders/:order", ("worker:b", "t9")))
            .unwrap();
        routes
            .insert(route(Method::POST, "/orders/:id/items", ("worker:a", "t1")))
            .unwrap();
        assert!(matches!(
            routes.find(&Method::POST, "/orders/1"),
            Found::WrongMethod(_)
        ));
        routes.remove_if(&("worker:a".into(), "t1".into()), |_| true);
        assert_eq!(routes.len(), 1);
        // Another connection of the same identity (a reconnect, a replica)
        // takes the route over; the old connection leaving does not remove it.
        routes
            .insert(route(Method::PUT, "/pay", ("worker:c#1", "t")))
            .unwrap();
        routes
            .insert(route(Method::PUT, "/pay", ("worker:c#2", "t")))
            .unwrap();
        routes.remove_if(&("worker:c#1".into(), "t".into()), |_| true);
        let Found::Route { route, .. } = routes.find(&Method::PUT, "/pay") else {
            panic!("the route went with the old connection");
        };
        assert_eq!(route.holder.0, "worker:c#2");
    }

    #[test]
    fn beyond_its_limit_the_table_refuses_a_route_and_a_freed_place_is_reused() {
        let routes = Routes::with_limit(2);
        routes.insert(route(Method::GET, "/a", ("w", "1"))).unwrap();
        routes.insert(route(Method::GET, "/b", ("w", "2"))).unwrap();
        let error = routes
            .insert(route(Method::GET, "/c", ("w", "3")))
            .unwrap_err();
        assert_eq!(error, RouteError::Full { limit: 2 });
        assert!(error.to_string().contains("at most 2 routes"), "{error}");
        // Moving a held route is not a new one.
        routes
            .insert(route(Method::GET, "/b2", ("w", "2")))
            .unwrap();
        routes.remove_if(&("w".into(), "1".into()), |_| true);
        routes.insert(route(Method::GET, "/c", ("w", "3"))).unwrap();
        assert!(matches!(
            routes.find(&Method::GET, "/c"),
            Found::Route { .. }
        ));
        assert!(matches!(routes.find(&Method::GET, "/b"), Found::NotFound));
    }

    #[test]
    fn query_parameters_read_as_strings() {
        let query = query_object(Some("a=1&b=x%20y&a=2&c"));
        assert_eq!(query["a"], "2");
        assert_eq!(query["b"], "x y");
        assert_eq!(query["c"], "");
        assert!(query_object(None).is_empty());
    }
}
