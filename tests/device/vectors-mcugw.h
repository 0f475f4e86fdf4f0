/* SPDX-License-Identifier: Apache-2.0 */
/* mcugw v3 test vectors (docs/protocol.md), produced by scripts/gen-vectors.py --print. */
#define MV_HS1                                                                                     \
        "03010000ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3a"                         \
        "fa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e15253"                         \
        "e39987f1a0c6e4ccbf8cb215632799cd78e77fe88dfc945f234eb67c1d9aae46"                         \
        "19ba2e94f9a933eecf9a5bc635410f1ccc21bd86690a5e0bdd330ad62b58edde"                         \
        "c1d12da0a538bc1218448f4e3fcb00000000000000000000000000000000"
#define MV_HS1_WIRE                                                                                \
        "030301018bca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e"                         \
        "3afa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e152"                         \
        "53e39987f1a0c6e4ccbf8cb215632799cd78e77fe88dfc945f234eb67c1d9aae"                         \
        "4619ba2e94f9a933eecf9a5bc635410f1ccc21bd86690a5e0bdd330ad62b58ed"                         \
        "dec1d12da0a538bc1218448f4e3fcb01010101010101010101010101010105e3"                         \
        "21914c00"
#define MV_HS1_MAC2                                                                                \
        "03010000ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3a"                         \
        "fa4c7944718da798efbcd91528520204f904b9bd6c7413dccdc214d951e15253"                         \
        "e39987f1a0c6e4ccbf8cb215632799cd78e77fe88dfc945f234eb67c1d9aae46"                         \
        "19ba2e94f9a933eecf9a5bc635410f1ccc21bd86690a5e0bdd330ad62b58edde"                         \
        "c1d12da0a538bc1218448f4e3fcbf3388cc4f421aa6bace98514dcdd8901"
#define MV_COOKIE                                                                                  \
        "03050000424242424242424242424242424242424242424242424242ac75b630"                         \
        "269dd0ff09900b078c50a20446cd084fd60fc9e1462d8cad432ac513"
#define MV_HS2                                                                                     \
        "0302000095ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1"                         \
        "448088431d14957d37fb52a68e9886dd2f55f14d90222c88bca6c6bd"
#define MV_DATA_PING                                                                               \
        "030300007856341200000000000000004020bf7da197dbd22abc10474358b8ec"                         \
        "474fbfcb3d"
#define MV_DATA_TELEMETRY                                                                          \
        "0303000078563412010000000000000029a98fde5fef1baf3cff84a14f347616"                         \
        "0499ad5c77b4f3a46c6529bf9c"
#define MV_DATA_ACK                                                                                \
        "03030000785634120000000000000000752241cbeaf6142ebf956b1e86c7a5cb"                         \
        "1ef63682cb9e80222b"
