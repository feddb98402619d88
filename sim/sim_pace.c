/*
 * The throughput model (docs/simulator.md, "Epoch time and stalls"): a bottleneck (fluid) model of
 * one epoch. The job asks for its data at its own pace (the epoch length it would take with data
 * always ready); each resource needs at least (its work) / (its rate) to carry what the epoch moved:
 *
 *   NIC        the busiest node's bytes in or out (an owner serving its peers is where queueing
 *              shows) over the per-node bandwidth, full duplex;
 *   S3 conns   the busiest node's S3 bytes over its connections times one connection's throughput;
 *   S3 rate    the busiest prefix's requests (GETs and HEADs) over S3's per-prefix request rate.
 *
 * Resources work in parallel and a fetch overlaps the job's compute (read-ahead and the loader's
 * workers keep several blocks in flight), so the epoch takes the largest of these times; the GPUs
 * wait for data for the difference. This is the best any scheduling could do with these demands:
 * a lower bound on the real epoch time, exact when one resource dominates.
 */
#include "sim_model.h"

sim_pace sim_pace_compute(const sim_pace_input *in)
{
    sim_pace p = {.limit = SIM_LIMIT_PACE};
    p.limit_s[SIM_LIMIT_PACE] = in->pace_s;
    double nic = 0, s3b = 0, req = 0;
    for (size_t i = 0; i < in->nodes; i++) {
        double io = in->in_bytes[i] > in->out_bytes[i] ? in->in_bytes[i] : in->out_bytes[i];
        nic = io > nic ? io : nic;
        s3b = in->s3_bytes[i] > s3b ? in->s3_bytes[i] : s3b;
    }
    for (size_t k = 0; k < in->prefixes; k++)
        req = in->prefix_requests[k] > req ? in->prefix_requests[k] : req;
    p.limit_s[SIM_LIMIT_NIC] = in->nic_bps > 0 ? nic / in->nic_bps : 0;
    p.limit_s[SIM_LIMIT_S3_CONNS] = in->s3_conn_bps > 0 && in->s3_conns ? s3b / (in->s3_conn_bps * in->s3_conns) : 0;
    p.limit_s[SIM_LIMIT_S3_RATE] = in->s3_rate > 0 ? req / in->s3_rate : 0;
    p.wall_s = in->pace_s;
    for (int l = SIM_LIMIT_NIC; l <= SIM_LIMIT_S3_RATE; l++) {
        if (p.limit_s[l] > p.wall_s) {
            p.wall_s = p.limit_s[l];
            p.limit = (sim_limit)l;
        }
    }
    p.stall = p.wall_s > 0 ? 1 - in->pace_s / p.wall_s : 0;
    return p;
}
