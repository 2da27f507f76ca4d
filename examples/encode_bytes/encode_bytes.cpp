// encode_bytes on the CPU SIMT executor.
#include "encode_bytes.hpp"
int main(int argc, char** argv) { return encode_bytes::main(argc, argv); }
