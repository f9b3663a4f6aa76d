//! Whether an opening event of [`super::UsageWatch`] carries content: its data parsed into just the
//! fields that tell, every other field skipped (`serde` ignores unknown fields; [`Carries`] reads a
//! value without keeping it).

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// An OpenAI chunk with a choice that carries a token: content, a refusal, reasoning, a tool call, or
/// a legacy completion's text.
pub(super) fn openai(data: &[u8]) -> bool {
    serde_json::from_slice::<OpenAiChunk>(data).is_ok_and(|c| {
        c.choices
            .iter()
            .flatten()
            .any(|choice| choice.text.0 || choice.delta.as_ref().is_some_and(OpenAiDelta::carries))
    })
}

/// A Gemini chunk with a part that carries text, a function call, data or code.
pub(super) fn gemini(data: &[u8]) -> bool {
    serde_json::from_slice::<GeminiChunk>(data).is_ok_and(|c| {
        c.candidates
            .iter()
            .flatten()
            .filter_map(|c| c.content.as_ref()?.parts.as_ref())
            .flatten()
            .any(|p| p.text.0 || p.function_call.0 || p.inline_data.0 || p.executable_code.0)
    })
}

/// The `type` of an event's data: what an unnamed event of a named dialect is.
pub(super) fn type_of(data: &[u8]) -> Option<String> {
    serde_json::from_slice::<Typed>(data).ok()?.kind
}

/// Whether a field carries something: a non-empty string, array or object, a number or a boolean (not
/// `null`, `""`, `[]` nor `{}`). A missing field carries nothing.
#[derive(Debug, Default)]
struct Carries(bool);

impl<'de> Deserialize<'de> for Carries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CarriesVisitor)
    }
}

struct CarriesVisitor;

impl<'de> Visitor<'de> for CarriesVisitor {
    type Value = Carries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Carries, E> {
        Ok(Carries(true))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Carries, E> {
        Ok(Carries(true))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Carries, E> {
        Ok(Carries(true))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Carries, E> {
        Ok(Carries(true))
    }
    fn visit_str<E>(self, s: &str) -> Result<Carries, E> {
        Ok(Carries(!s.is_empty()))
    }
    fn visit_unit<E>(self) -> Result<Carries, E> {
        Ok(Carries(false))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Carries, A::Error> {
        let mut any = false;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(Carries(any))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Carries, A::Error> {
        let mut any = false;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            any = true;
        }
        Ok(Carries(any))
    }
}

/// An unnamed event of a named dialect: its `type` stands for the name.
#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    choices: Option<Vec<OpenAiChoice>>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    #[serde(default)]
    delta: Option<OpenAiDelta>,
    /// Legacy Completions.
    #[serde(default)]
    text: Carries,
}

#[derive(Deserialize)]
struct OpenAiDelta {
    #[serde(default)]
    content: Carries,
    #[serde(default)]
    refusal: Carries,
    /// DeepSeek, vLLM (`reasoning_content`), OpenRouter and Ollama (`reasoning`).
    #[serde(default)]
    reasoning_content: Carries,
    #[serde(default)]
    reasoning: Carries,
    #[serde(default)]
    tool_calls: Carries,
    #[serde(default)]
    function_call: Carries,
    #[serde(default)]
    audio: Carries,
}

impl OpenAiDelta {
    fn carries(&self) -> bool {
        [
            &self.content,
            &self.refusal,
            &self.reasoning_content,
            &self.reasoning,
            &self.tool_calls,
            &self.function_call,
            &self.audio,
        ]
        .iter()
        .any(|c| c.0)
    }
}

#[derive(Deserialize)]
struct GeminiChunk {
    #[serde(default)]
    candidates: Option<Vec<GeminiCandidate>>,
}

#[derive(Deserialize)]
struct GeminiCandidate {
    #[serde(default)]
    content: Option<GeminiContent>,
}

#[derive(Deserialize)]
struct GeminiContent {
    #[serde(default)]
    parts: Option<Vec<GeminiPart>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiPart {
    #[serde(default)]
    text: Carries,
    #[serde(default)]
    function_call: Carries,
    #[serde(default)]
    inline_data: Carries,
    #[serde(default)]
    executable_code: Carries,
}
