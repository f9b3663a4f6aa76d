//! What the mock "model" generates for a prompt, whatever the provider's dialect: the prompt's words, cycled.
//!
//! Every provider module ([`super::openai`], [`super::responses`], [`super::gemini`], [`super::anthropic`])
//! renders the same [`Generation`], so the same prompt gives the same text in every shape, streamed or not,
//! and a test knows the answer in advance ([`Generation::text`]).
//!
//! "Tokens" are whitespace-separated words and the usage counts are word counts: the mock makes no attempt
//! at real tokenization, which would make the bytes depend on a vocabulary.

/// The token text used when the prompt contains no words at all, so that such a request still streams.
pub const FALLBACK_WORD: &str = "mock";

/// The generated answer to one prompt. Cheap to hold: tokens are produced on demand, so a million-token
/// answer costs no more memory than a ten-token one (until someone asks for all of its [`text`]).
///
/// [`text`]: Generation::text
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The prompt's words, never empty (see [`FALLBACK_WORD`]).
    words: Vec<String>,
    /// How many words the prompt really had, for the usage counts.
    prompt_tokens: u32,
    /// How many tokens are generated.
    tokens: u32,
}

impl Generation {
    /// `tokens` tokens of `prompt`'s words, or fewer when `max_tokens` (the request's limit) is smaller.
    pub fn new(prompt: &str, max_tokens: Option<u32>, tokens: u32) -> Self {
        let mut words: Vec<String> = prompt.split_whitespace().map(str::to_string).collect();
        let prompt_tokens = u32::try_from(words.len()).unwrap_or(u32::MAX);
        if words.is_empty() {
            words.push(FALLBACK_WORD.to_string());
        }
        Generation {
            words,
            prompt_tokens,
            tokens: max_tokens.map_or(tokens, |max| tokens.min(max)),
        }
    }

    /// How many tokens are generated.
    pub fn token_count(&self) -> u32 {
        self.tokens
    }

    /// [`Generation::token_count`] as an index bound.
    pub fn count(&self) -> usize {
        usize::try_from(self.tokens).unwrap_or(usize::MAX)
    }

    /// The prompt's length in words (0 for a prompt without words).
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens
    }

    /// Prompt and generated tokens together.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.tokens)
    }

    /// Token number `i` (counting from 0): the prompt's words in order, cycling, each but the first with a
    /// leading space. Defined for every `i`, even past [`Generation::token_count`].
    pub fn token(&self, i: usize) -> String {
        // `words` is never empty, but `get` keeps this panic-free even if that changed.
        let word = self
            .words
            .get(i % self.words.len().max(1))
            .map_or(FALLBACK_WORD, String::as_str);
        if i == 0 {
            word.to_string()
        } else {
            format!(" {word}")
        }
    }

    /// All the generated text: the tokens, concatenated.
    pub fn text(&self) -> String {
        (0..self.count()).map(|i| self.token(i)).collect()
    }
}
