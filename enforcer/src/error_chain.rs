//! An error and its causes on one line: reqwest's own message alone says little ("error
//! sending request"), its causes say what happened (refused, certificate, timeout).

pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
