// encode_bytes on a GPU.
#include "encode_bytes.hpp"
int main(int argc, char** argv) { return encode_bytes::main(argc, argv); }
