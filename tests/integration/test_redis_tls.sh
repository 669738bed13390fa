#!/usr/bin/env bash
# test_redis_tls.sh - deploy/redis-tls/ as shipped (paths and ports rewritten):
# a TLS-only Redis (redis-tls.conf: no plain port, client certificates
# required) reached through a client-side stunnel (stunnel-redis.conf, which
# verifies the server's chain and name), and the query API behind a
# server-side stunnel (stunnel-query.conf). Certificates are made here with
# openssl: a CA, Redis's server certificate, the tunnel's client certificate,
# the API's certificate, and a second, rogue CA.
#
# Checked: plain text to Redis is refused; loanwire-exposure consumes a topic
# into that Redis through the tunnel and loanwire-query reads every borrower
# back through it, as a one-off lookup and as the HTTP server behind
# HTTPS (curl verifying the API's certificate); a tunnel that trusts the rogue
# CA, or expects another host name, gets no answer; plain HTTP to the HTTPS
# port and HTTPS without the CA fail.
set -uo pipefail
src=${LW_SOURCE_DIR:?run through ctest}
bin=${LW_BIN_DIR:?run through ctest}
boot=${LOANWIRE_BOOTSTRAP:-127.0.0.1:9092}
tmp=$(mktemp -d "${LW_TMP_DIR:-/tmp}/redis-tls.XXXXXX")
topic=lwtest.redis-tls.$$.$(date +%s)
pass=0 fail=0
pids=()
check() { if eval "$2"; then echo "ok   $1"; pass=$((pass + 1)); else echo "FAIL $1"; fail=$((fail + 1)); fi; }
cleanup() {
  [ $fail = 0 ] || tail -n 5 "$tmp"/*.log 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  "$bin/loanwire-topics" delete -b "$boot" -t "$topic" --alerts-topic "$topic.a" --dlq-topic "$topic.d" --inquiries-topic "$topic.i" \
    >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

for tool in stunnel4 openssl redis-server redis-cli curl kcat; do
  command -v $tool >/dev/null || { echo "FAIL: $tool is missing (./deploy/install-deps.sh installs it)"; exit 1; }
done
kcat -b "$boot" -L -m 10 >/dev/null 2>&1 ||
  { echo "FAIL: Kafka is not reachable at $boot (LOANWIRE_BOOTSTRAP); start it with ./deploy/stack.sh up"; exit 1; }

# Free loopback ports, chosen by the kernel (other stacks may run beside this one).
read -r p_redis p_tunnel p_rogue p_wrongname p_query p_https < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ---- certificates -----------------------------------------------------------
cd "$tmp" || exit 1
mkca() { # name
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" -keyout "$1.key" -out "$1.crt" \
    >/dev/null 2>&1
}
mkcert() { # name ca san
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" >/dev/null 2>&1 &&
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$1.ext" &&
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 \
      -extfile "$1.ext" -out "$1.crt" >/dev/null 2>&1
}
mkca ca && mkca rogue-ca &&
  mkcert redis ca "DNS:redis.test,IP:127.0.0.1" &&
  mkcert client ca "DNS:loanwire-client" &&
  mkcert query ca "DNS:localhost,IP:127.0.0.1"
check "certificates made (CA, Redis, client, API, rogue CA)" '[ -s query.crt ] && [ -s rogue-ca.crt ]'
chmod 600 ./*.key

# ---- TLS-only Redis, from deploy/redis-tls/redis-tls.conf -----------------------
sed -e "s|^tls-port .*|tls-port $p_redis|" \
    -e "s|/etc/redis/tls/redis.crt|$tmp/redis.crt|; s|/etc/redis/tls/redis.key|$tmp/redis.key|" \
    -e "s|/etc/redis/tls/ca.crt|$tmp/ca.crt|" "$src/deploy/redis-tls/redis-tls.conf" >redis.conf
printf 'bind 127.0.0.1\ndir %s\nsave ""\nappendonly no\n' "$tmp" >>redis.conf
redis-server redis.conf >redis.log 2>&1 &
pids+=($!)
wait_port "$p_redis" 10
tlscli=(redis-cli -h 127.0.0.1 -p "$p_redis" --tls --cacert ca.crt --cert client.crt --key client.key)
check "TLS-only Redis answers a TLS client with the client certificate" '[ "$("${tlscli[@]}" ping 2>&1)" = PONG ]'
check "TLS-only Redis refuses plain text" '[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$p_redis" ping 2>&1)" != PONG ]'
check "TLS-only Redis refuses a TLS client without a certificate" \
  '[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$p_redis" --tls --cacert ca.crt ping 2>&1)" != PONG ]'

# ---- client-side stunnel, from deploy/redis-tls/stunnel-redis.conf -----------
tunnel() { # conf-name accept-port ca check-host
  sed -e "s|^accept = .*|accept = 127.0.0.1:$2|; s|^connect = .*|connect = 127.0.0.1:$p_redis|" \
      -e "s|^CAfile = .*|CAfile = $tmp/$3.crt|; s|^checkHost = .*|checkHost = $4|" \
      -e "s|^cert = .*|cert = $tmp/client.crt|; s|^key = .*|key = $tmp/client.key|" \
      "$src/deploy/redis-tls/stunnel-redis.conf" >"$1.conf"
  printf 'output = %s/%s.log\n' "$tmp" "$1" | cat - "$1.conf" >"$1.tmp" && mv "$1.tmp" "$1.conf"
  stunnel4 "$tmp/$1.conf" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$2" 10
}
tunnel tunnel "$p_tunnel" ca redis.test
tunnel rogue "$p_rogue" rogue-ca redis.test
tunnel wrongname "$p_wrongname" ca other.test
url=redis://127.0.0.1:$p_tunnel
check "plain redis-cli through the tunnel gets PONG" '[ "$(redis-cli -u "$url" ping 2>&1)" = PONG ]'
check "a tunnel trusting another CA gets no answer (server chain verified)" \
  '[ "$(timeout 10 redis-cli -p "$p_rogue" ping 2>&1)" != PONG ] && grep -qi "certificate verify failed" rogue.log'
check "a tunnel expecting another host name gets no answer (checkHost)" \
  '[ "$(timeout 10 redis-cli -p "$p_wrongname" ping 2>&1)" != PONG ] && grep -qi "certificate verify failed\|check.*host\|subject" wrongname.log'

# ---- the consumer and the query API through the tunnel -------------------------
"$bin/loanwire-topics" create -b "$boot" -t "$topic" --alerts-topic "$topic.a" --dlq-topic "$topic.d" --inquiries-topic "$topic.i" \
  --partitions 3 --alerts-partitions 1 >/dev/null 2>&1
check "topic $topic created" '[ $? = 0 ]'
"$bin/loanwire-gen" --events 300 --seed $$ -o feed.jsonl 2>/dev/null
"$bin/loanwire-produce" -b "$boot" -t "$topic" -q feed.jsonl 2>produce.err
check "300 events produced" '[ $? = 0 ]'
timeout 180 "$bin/loanwire-exposure" -b "$boot" -t "$topic" -g "$topic" --alerts-topic "$topic.a" \
  --dlq-topic "$topic.d" --inquiries-topic "$topic.i" --redis "$url" --until-caught-up --status 0 >exposure.out 2>exposure.err
rc=$?
check "loanwire-exposure consumes into the TLS-only Redis through the tunnel (rc $rc)" '[ $rc = 0 ]'
[ $rc = 0 ] || tail -n 20 exposure.err
borrowers=$(python3 -c 'import json,sys; print("\n".join(sorted({json.loads(l)["borrower_id"] for l in open(sys.argv[1])})))' feed.jsonl)
nb=$(printf '%s\n' "$borrowers" | wc -l)
found=0
for b in $borrowers; do
  "$bin/loanwire-query" --redis "$url" --borrower "$b" >/dev/null 2>&1 && found=$((found + 1))
done
check "loanwire-query --borrower reads all $nb borrowers back through the tunnel (found $found)" '[ "$found" = "$nb" ]'
check "the state is in the TLS Redis itself (DBSIZE over TLS > $nb)" '[ "$("${tlscli[@]}" dbsize)" -gt "$nb" ]'

"$bin/loanwire-query" --redis "$url" --listen "127.0.0.1:$p_query" --no-auth --threads 1 >query.out 2>query.err &
pids+=($!)
wait_port "$p_query" 10
sed -e "s|^accept = .*|accept = 127.0.0.1:$p_https|; s|^connect = .*|connect = 127.0.0.1:$p_query|" \
    -e "s|^cert = .*|cert = $tmp/query.crt|; s|^key = .*|key = $tmp/query.key|" \
    "$src/deploy/redis-tls/stunnel-query.conf" >https.conf
printf 'output = %s/https.log\n' "$tmp" | cat - https.conf >https.tmp && mv https.tmp https.conf
stunnel4 "$tmp/https.conf" >/dev/null 2>&1 &
pids+=($!)
wait_port "$p_https" 10
b1=$(printf '%s\n' "$borrowers" | head -n 1)
code=$(curl -s -o api.json -w '%{http_code}' --cacert ca.crt "https://localhost:$p_https/v1/borrowers/$b1/exposure?purpose=LOAN_APPROVAL")
check "HTTPS through stunnel: the API returns $b1's exposure (HTTP $code)" \
  '[ "$code" = 200 ] && grep -q "\"borrower_id\":\"$b1\"" api.json'
check "HTTPS /healthz: 200 (Redis reached through the Redis tunnel)" \
  '[ "$(curl -s -o /dev/null -w "%{http_code}" --cacert ca.crt "https://localhost:$p_https/healthz")" = 200 ]'
curl -s -o /dev/null "https://localhost:$p_https/healthz"
check "HTTPS without the CA fails verification (curl exit 60)" '[ $? = 60 ]'
curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$p_https/healthz"
check "plain HTTP to the HTTPS port fails" '[ $? != 0 ]'

echo "$pass passed, $fail failed"
[ $fail = 0 ]
