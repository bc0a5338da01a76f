#!/bin/sh
# Signs a Chatty user token the way a site's backend would, with OpenSSL 3
# and an Ed25519 key (Chatty holds only the public key).
#
#   openssl genpkey -algorithm ed25519 -out chatty-user.pem      # once
#   openssl pkey -in chatty-user.pem -pubout -outform DER | tail -c 32 \
#     | openssl base64 -A | tr '+/' '-_' | tr -d '='              # the key to register
#   ops/examples/user-token.sh chatty-user.pem k1 my-site 42 "Ann Editor" [moderator]
#
# Prints the token for data-user-token (valid 5 minutes, usable once).
# Names with quotes or backslashes need JSON escaping, left out here.
set -eu
[ $# -ge 5 ] || { echo "usage: $0 KEY.pem KID SITE USER_ID NAME [ROLE]" >&2; exit 64; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
roles=""
[ -n "${6:-}" ] && roles=$(printf ',"roles":["%s"]' "$6")
header=$(printf '{"alg":"EdDSA","kid":"%s","typ":"JWT"}' "$2" | b64url)
claims=$(printf '{"aud":"%s","sub":"%s","name":"%s"%s,"iat":%d,"exp":%d,"jti":"%s"}' \
  "$3" "$4" "$5" "$roles" "$now" $((now + 300)) "$(openssl rand -hex 16)" | b64url)
# Ed25519 signs the whole input at once: OpenSSL 3.0 wants it in a file.
signed=$(mktemp)
trap 'rm -f "$signed"' EXIT
printf '%s.%s' "$header" "$claims" > "$signed"
sig=$(openssl pkeyutl -sign -inkey "$1" -rawin -in "$signed" | b64url)
printf '%s.%s.%s\n' "$header" "$claims" "$sig"
