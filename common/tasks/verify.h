/* verify: the answer checkers behind the built-in scorers (common/tasks/score.h),
 * as pure functions over text: normalised exact match, the last number of a
 * text and a comparison with a tolerance, a multiple-choice letter, the
 * final \boxed{...} answer, a POSIX regular expression, and the format checks
 * (a required <answer>...</answer> block; think then answer).
 *
 * Texts are (pointer, length) spans, need not be NUL-terminated (except for
 * verify_regex's), and may hold any bytes: non-ASCII bytes are ordinary
 * characters. Nothing here allocates except verify_regex, which keeps the
 * last compiled pattern of each thread (freed when the thread exits).
 * Thread-safe. Errors: the functions that can refuse an input (a reference
 * answer that is not a number, a bad pattern) return false or a negative
 * ERR_* with the reason in why; nothing is logged (the input may come from a
 * peer). */
#ifndef RLHF_VERIFY_H
#define RLHF_VERIFY_H

#include <stdbool.h>
#include <stddef.h>

#define VERIFY_REGEX_MAX_PATTERN 512 /* bytes of a pattern at most */
#define VERIFY_REGEX_MAX_INPUT 8192  /* a longer text never matches */
/* Size of a compiled pattern at most, in atoms after repeats are unrolled
 * ("(a{1,100}){1,20}" is about 2000): glibc's regcomp copies the repeated
 * part of a bound and of a '+', so stacked ones cost memory and time
 * multiplied. */
#define VERIFY_REGEX_MAX_NODES 4000
#define VERIFY_NUMBER_REL_TOL 1e-6 /* the number scorer's default tolerances */
#define VERIFY_NUMBER_ABS_TOL 1e-9

/* Normalisation for exact match: ASCII letters lowercased; ASCII punctuation
 * dropped, except a '.' between two digits (a decimal point) and a '-' that
 * starts a number (after the start or whitespace, before a digit); runs of
 * whitespace become one space, none at either end. "The  Answer: 3.5!" ->
 * "the answer 3.5"; "1,000" -> "1000"; "-2" stays "-2". Other bytes are kept.
 * Writes at most cap - 1 bytes and a NUL into out (cap > 0) and returns the
 * normalised length, which may exceed what was written. */
size_t verify_normalize(const char *s, size_t n, char *out, size_t cap);
/* Whether two texts are equal after normalisation (no buffer needed). */
bool verify_norm_equal(const char *a, size_t na, const char *b, size_t nb);

/* The answer part of a completion: the content of its last complete
 * <answer>...</answer> block when it has one, else all of it. Sets *start
 * and *len within s. */
void verify_answer_span(const char *s, size_t n, size_t *start, size_t *len);

/* The last number in text: an optional sign ('-' or '+' directly before the
 * digits, a '-' only when not joining two words or numbers: "45-33" is 33),
 * digits with thousands commas ("1,234"), an optional decimal part ("82.0",
 * ".5" is 0.5), an optional exponent ("2e5"), and a simple fraction of two
 * such numbers ("3/4" is 0.75). The chat task's last-integer rule
 * (chat_task_extract) is the integer case of this one. Returns false when
 * there is no digit. */
bool verify_last_number(const char *s, size_t n, double *value);
/* A reference answer that is one number and nothing else (whitespace
 * around, a leading '$' or a trailing '%' allowed; \frac{a}{b} too). Returns
 * false otherwise. */
bool verify_parse_number(const char *s, size_t n, double *value);
/* |got - want| <= abs_tol + rel_tol * |want|, both finite. */
bool verify_number_close(double got, double want, double rel_tol, double abs_tol);

/* The letter ('A'..'E') a completion chooses, or 0: first the last "answer"
 * phrase ("Answer: B", "the answer is (c)", "answer - **D**"); else a
 * completion that is just the letter ("B", "(B)", "B.", "**B**"); else one
 * that opens with it ("B) 42 because", "(B) since"); else the last "(X)"
 * with an upper-case letter anywhere. */
char verify_choice(const char *s, size_t n);
/* A reference letter: "B", "b", "(B)", "B)" or "B." (whitespace around
 * allowed), A..E; 0 otherwise. */
char verify_choice_answer(const char *s, size_t n);

/* The content of the last \boxed{...} (nested braces counted, "\{" and
 * "\}" are literal braces, whitespace allowed before the '{'). Returns false
 * when there is none or its braces do not close. */
bool verify_boxed(const char *s, size_t n, size_t *start, size_t *len);
/* Whether a boxed content equals a reference answer: equal after removing
 * whitespace, '$', "\left", "\right", the spacing commands "\!", "\,", "\;",
 * "\ ", a "\text{...}" wrapper (its content stays), a trailing '.', and with
 * "\dfrac" and "\tfrac" read as "\frac"; or both read as numbers
 * (verify_parse_number) within a relative 1e-9. A reference written as
 * \boxed{...} itself is unwrapped first. */
bool verify_boxed_match(const char *got, size_t ngot, const char *want, size_t nwant);

/* Whether NUL-terminated text contains a match of POSIX extended regular
 * expression pattern (regexec, so anchor with ^ and $ for a whole match).
 * A text longer than VERIFY_REGEX_MAX_INPUT bytes does not match (no error).
 * Returns 0 with *match set, or ERR_ARG with why filled for a pattern that is
 * empty, longer than VERIFY_REGEX_MAX_PATTERN, uses a back-reference (\1..\9:
 * the one construct that makes POSIX matching slow), unrolls to more than
 * VERIFY_REGEX_MAX_NODES atoms (stacked bounds such as "((a{1,255}){1,255}){1,255}"
 * or stacked '+' such as "a" and twenty '+', which take regcomp gigabytes) or
 * does not compile.
 * Each thread keeps its last pattern compiled, so the G completions of one
 * prompt compile it once. */
int verify_regex(const char *pattern, const char *text, bool *match, char *why, size_t why_len);
/* The same checks on pattern alone (compiles and frees it). */
int verify_regex_check(const char *pattern, char *why, size_t why_len);

/* A required answer block: exactly one "<answer>" and one "</answer>", in
 * that order, with non-blank content between them and nothing but
 * whitespace after; anything may come before. */
bool verify_format_answer_tag(const char *s, size_t n);
/* Think, then answer: the whole completion is "<think>" non-blank
 * "</think>" then "<answer>" non-blank "</answer>", whitespace allowed
 * around and between the blocks, each tag exactly once. */
bool verify_format_think(const char *s, size_t n);

#endif
