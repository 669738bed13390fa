# lib.sh - shared by the deploy scripts: paths, ports, messages, Kafka fetch.
# Sourced, not run.

LW_ROOT=${LW_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
LW_KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$LW_ROOT/deploy/kafka/pom.xml")
LW_CACHE=${LOANWIRE_CACHE:-$LW_ROOT/.cache}
LW_KAFKA_LIBS=$LW_CACHE/kafka-$LW_KAFKA_VERSION/libs
LW_STACK_DIR=${LOANWIRE_STACK_DIR:-$LW_ROOT/.stack}
LW_KAFKA_PORT=${LOANWIRE_KAFKA_PORT:-9092}
LW_CONTROLLER_PORT=${LOANWIRE_CONTROLLER_PORT:-$((LW_KAFKA_PORT + 1))}
LW_REDIS_PORT=${LOANWIRE_REDIS_PORT:-6379}
LW_KAFKA_HEAP=${LOANWIRE_KAFKA_HEAP:-512m}
# The dashboard's charting library (npm), vendored into the cache; CMake
# copies its dist files beside loanwire-query (consumers/query/CMakeLists.txt).
LW_UPLOT_VERSION=1.6.32
LW_UPLOT_DIR=$LW_CACHE/npm/node_modules/uplot

lw_say() { printf '%s\n' "$*" >&2; }
lw_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Copies kafka_2.13 and its runtime dependencies from Maven Central into the
# cache, once. The marker file is written last, so an interrupted fetch redoes.
lw_kafka_fetch() {
  [ -f "$LW_KAFKA_LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || lw_die "maven is needed to fetch Kafka (./deploy/install-deps.sh installs it)"
  lw_say "fetching Apache Kafka $LW_KAFKA_VERSION from Maven Central into $LW_KAFKA_LIBS"
  rm -rf "$LW_KAFKA_LIBS"
  mkdir -p "$LW_KAFKA_LIBS"
  local tries=0
  until mvn -q -B -f "$LW_ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$LW_KAFKA_LIBS" >"$LW_CACHE/mvn.log" 2>&1; do
    tries=$((tries + 1))
    [ $tries -lt 3 ] || { cat "$LW_CACHE/mvn.log" >&2; lw_die "could not fetch Kafka from Maven Central"; }
    lw_say "maven failed, retrying ($tries)"
    sleep 5
  done
  ls "$LW_KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 || lw_die "kafka_2.13 jar missing after fetch"
  touch "$LW_KAFKA_LIBS/.complete"
}

# Fetches uPlot with the machine's npm into the cache, once (the registry is
# asked only when the pinned version is not there yet). The page never loads
# it from a CDN: loanwire-query serves these files itself.
lw_uplot_fetch() {
  if [ -f "$LW_UPLOT_DIR/dist/uPlot.iife.min.js" ] &&
     grep -q "\"version\": \"$LW_UPLOT_VERSION\"" "$LW_UPLOT_DIR/package.json" 2>/dev/null; then
    return 0
  fi
  command -v npm >/dev/null || lw_die "npm is needed to fetch uPlot (./deploy/install-deps.sh installs it)"
  lw_say "fetching uPlot $LW_UPLOT_VERSION from npm into $LW_CACHE/npm"
  mkdir -p "$LW_CACHE/npm"
  npm install --prefix "$LW_CACHE/npm" --no-audit --no-fund --no-save --silent \
      "uplot@$LW_UPLOT_VERSION" >"$LW_CACHE/npm.log" 2>&1 ||
    { cat "$LW_CACHE/npm.log" >&2; lw_die "could not fetch uPlot from npm"; }
  [ -f "$LW_UPLOT_DIR/dist/uPlot.iife.min.js" ] || lw_die "uPlot's dist files missing after npm install"
}
