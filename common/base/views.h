/* views: one aligned block per group of buffers, carved into named views.
 *
 * A group is a table of rows, each the address of the caller's pointer, the
 * size of one element and the count, so a buffer's size sits beside its
 * name: {VIEW(&g->logits, B * V), VIEW(&g->seq, B)}. Every view starts on a
 * 64-byte boundary (the BLAS kernels and the SIMD loops want whole cache
 * lines), in the order of the table; a view of count 0 points where the next
 * one starts.
 *
 * Ownership: the block belongs to the caller, who releases the whole group
 * with one free(block); views are never freed one by one. Contents are not
 * initialised (clear what must start at zero). Threading: none of its own.
 * Errors: allocation failure aborts, as xmalloc does; a row whose size
 * overflows size_t is a CHECK. */
#ifndef RLHF_VIEWS_H
#define RLHF_VIEWS_H

#include <stddef.h>

typedef struct {
    void  *view;  /* address of the caller's pointer (float **, int **, ...) */
    size_t size;  /* bytes of one element */
    size_t count; /* elements */
} View;

/* The row for pointer *pp with n elements of its own type. */
#define VIEW(pp, n) ((View){(pp), sizeof **(pp), (size_t)(n)})

/* Bytes of the block that holds the n views of v, each rounded up to 64. */
size_t views_bytes(const View *v, int n);
/* Points each view into block (64-byte aligned, views_bytes(v, n) long). */
void views_carve(void *block, const View *v, int n);
/* A new 64-byte aligned block carved into the n views of v. Caller owns:
 * free() it once. */
void *views_alloc(const View *v, int n);
/* Carves the views into *block, first replacing it by a larger one when
 * *bytes (its size) is too small; the old contents are not kept. */
void views_reserve(void **block, size_t *bytes, const View *v, int n);

#endif
