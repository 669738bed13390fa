/*
 * ReadEvents - reads Loanwire's loan events from Kafka with stock libraries
 * and prints each as one line of JSON.
 *
 * Loanwire writes Avro single-object encoding: C3 01, the writer schema's
 * CRC-64-AVRO fingerprint (8 bytes, little-endian), then the datum. Apache
 * Avro's BinaryMessageDecoder reads exactly that: it looks the fingerprint up
 * in a SchemaStore and resolves that writer schema to the reader schema. The
 * store holds every LoanEvent version under the schemas folder (schemas/ and
 * schemas/v1/), so events written by an older producer still decode; fields
 * they lack take the reader's defaults (null for v2's annual_income_fen and
 * term_months).
 *
 *   java -cp 'target/classes:target/lib/*' io.loanwire.examples.ReadEvents \
 *       BROKERS TOPIC SCHEMAS_DIR [LIMIT]
 *
 * Reads every partition from its beginning to the end it has when the program
 * starts (or LIMIT events), then exits: 0 when every record decoded, 1 when
 * some did not (each named on stderr with partition and offset), 2 on usage.
 * A service would subscribe with a group.id instead and keep polling.
 */
package io.loanwire.examples;

import java.io.File;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.SchemaStore;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class ReadEvents {
    private static final String LOAN_EVENT = "loanwire.v1.LoanEvent";

    /* Every .avsc under dir that defines LoanEvent, each with a parser of its
     * own (one parser refuses a second definition of the same name). */
    static List<Schema> loanEventVersions(File dir) throws IOException {
        List<Schema> out = new ArrayList<>();
        File[] files = dir.listFiles();
        if (files == null)
            throw new IOException(dir + ": not a folder");
        for (File f : files) {
            if (f.isDirectory()) {
                out.addAll(loanEventVersions(f));
            } else if (f.getName().endsWith(".avsc")) {
                Schema s = new Schema.Parser().parse(f);
                if (s.getFullName().equals(LOAN_EVENT))
                    out.add(s);
            }
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3 || args.length > 4) {
            System.err.println("usage: ReadEvents BROKERS TOPIC SCHEMAS_DIR [LIMIT]");
            System.exit(2);
        }
        String brokers = args[0], topic = args[1];
        File schemas = new File(args[2]);
        long limit = args.length == 4 ? Long.parseLong(args[3]) : Long.MAX_VALUE;

        // The reader schema is the current LoanEvent.avsc; the store knows every version.
        Schema reader = new Schema.Parser().parse(new File(schemas, "LoanEvent.avsc"));
        SchemaStore.Cache store = new SchemaStore.Cache();
        for (Schema writer : loanEventVersions(schemas))
            store.addSchema(writer);
        // GenericData without conversions: occurred_at (timestamp-millis) stays
        // epoch milliseconds, as in Loanwire's own JSON form.
        BinaryMessageDecoder<GenericRecord> decoder =
            new BinaryMessageDecoder<>(GenericData.get(), reader, store);

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "loanwire-read-events");
        int bad = 0;
        long printed = 0;
        try (KafkaConsumer<byte[], byte[]> consumer =
                 new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> parts = new ArrayList<>();
            for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30)))
                parts.add(new TopicPartition(topic, p.partition()));
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> end = new HashMap<>(consumer.endOffsets(parts));
            end.entrySet().removeIf(e -> consumer.position(e.getKey()) >= e.getValue());
            while (!end.isEmpty() && printed < limit) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    TopicPartition tp = new TopicPartition(r.topic(), r.partition());
                    Long stop = end.get(tp);
                    if (stop == null || r.offset() >= stop)
                        continue; // written after we started
                    try {
                        GenericRecord ev = decoder.decode(r.value());
                        System.out.println(ev); // GenericData's JSON rendering
                        printed++;
                    } catch (Exception e) { // unknown fingerprint, bad marker, short datum
                        System.err.println(topic + "/" + r.partition() + "@" + r.offset() + ": " + e);
                        bad++;
                    }
                    if (r.offset() + 1 >= stop)
                        end.remove(tp);
                    if (printed >= limit)
                        break;
                }
            }
        }
        System.out.flush();
        System.exit(bad == 0 ? 0 : 1);
    }
}
