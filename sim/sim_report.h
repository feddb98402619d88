/*
 * sim_report: what shoal-sim prints and writes from a finished model run: the summary table,
 * summary.json, the CSV time series and the gnuplot plots. Nothing here reads a clock, so the
 * files are a function of the run alone (same seed, same bytes); the caller prints timings.
 */
#ifndef SHOAL_SIM_REPORT_H
#define SHOAL_SIM_REPORT_H

#include "sim_model.h"

#include <stdbool.h>
#include <stdio.h>

/* Derived figures of a run, also what the tests assert on. */
typedef struct sim_summary {
    double s3_gets[SIM_SYSTEMS], s3_bytes[SIM_SYSTEMS], s3_503[SIM_SYSTEMS];
    double dollars[SIM_SYSTEMS];      /* whole run: GETs + egress + PUTs */
    double hit_ratio[SIM_SYSTEMS];
    double lat_p50[SIM_SYSTEMS], lat_p99[SIM_SYSTEMS]; /* seconds */
    double msgs_per_node_period;
    size_t victims, victims_probed, victims_all_dead;
    double mean_probe_periods;        /* SWIM's first-detection figure; e/(e-1) ideally */
    double mean_first_suspect_s, mean_first_dead_s, mean_all_dead_periods, max_all_dead_periods;
    uint64_t false_suspicions, false_deaths, moved_blocks, moved_bytes;
    double join_move_ratio;           /* moved / ideal over joins; 0 when none */
} sim_summary;

/* Computes the derived figures. */
void sim_summary_compute(const sim_model *m, sim_summary *out);

/* Prints the human summary table. */
void sim_report_print(const sim_model *m, const sim_summary *s, FILE *f);

/* Writes summary.json, timeseries.csv, epochs.csv, detections.csv and latency.csv into `dir`
 * (created if missing). -1 with SHOAL_ERR_IO naming the file on failure. */
int sim_report_write(const sim_model *m, const sim_summary *s, const char *dir);

/* Writes plots.gp into `dir` and runs gnuplot on it there, producing PNGs (pngcairo when the
 * installed gnuplot has it, else png). -1 with SHOAL_ERR_IO when gnuplot cannot be run or fails. */
int sim_report_plot(const char *dir);

#endif
