/* A hash of merged weights (FNV-1a over the bytes of each float, little-endian), printed by
 * the firmware and by the host tool to tell whether both computed the same bits. */
#ifndef MLP_HASH_H
#define MLP_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t mlp_hash(const float *v, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        for (int k = 0; k < 4; k++) {
            h ^= (bits >> (8 * k)) & 0xffu;
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

#endif
