// Dense-gradient collectives through NCCL (dist/comm.h), for ranks that each
// have a GPU of their own. libnccl.so.2 is loaded at run time (NMOE_NCCL_LIB
// names another file), so the build and the CPU-only machines never need it.
// Plain C++ header (no CUDA or NCCL types).
#pragma once

#include <memory>
#include <string>

#include "dist/comm.h"

namespace nmoe {

class Backend;
class Rendezvous;

// "" when NCCL can be loaded, otherwise why not. Loads it at the first call.
std::string nccl_load_error();
// "NCCL 2.x.y" of the loaded library.
std::string nccl_version_string();

// Collective: every rank calls it. Collectives run on the backend's stream;
// each returns once its result is complete, and gives up with an error when
// another rank fails (dist/abort.h) or it waits longer than the rendezvous's
// timeout. Making the communicator blocks in NCCL until every rank has joined
// (a rank that dies then is left to the launcher, which stops the others).
// Sums are in NCCL's order: the bits depend on the rank count.
std::unique_ptr<Comm> make_nccl_comm(Backend& backend, Rendezvous& rdv);

}  // namespace nmoe
