#include "consumer.hpp"
int main() { return consumer_main(); }
