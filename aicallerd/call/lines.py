"""Fixed lines the agent speaks outside the LLM's replies (pre-rendered at start)."""

FALLBACK_LINE = "Sorry, I'm having a little trouble right now. Could you say that again?"
TIME_LIMIT_LINE = "We've reached the time limit for this call. Thank you for calling, goodbye!"
