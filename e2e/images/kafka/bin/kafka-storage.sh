#!/bin/sh
# Kafka's storage tool (`kafka-storage.sh format ...`), as the official script runs it.
exec java -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    -cp '/opt/kafka/libs/*' kafka.tools.StorageTool "$@"
