# shoal-sim plots: run `gnuplot plots.gp` in this folder.
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 960,540 font 'sans,10'
} else {
  set terminal png size 960,540
}
set datafile separator ','
set datafile missing 'NaN'
set key outside right top
set grid
set xlabel 'simulated time (s)'
set xrange [0:*]
# Room at the top for the labels of the churn events (dashed lines).
set offsets 0, 0, graph 0.18, 0
set arrow 1 from 36.915, graph 0 to 36.915, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 1 'kill' at 37.415, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 2 from 60.000, graph 0 to 60.000, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 2 'kill x10' at 60.500, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 3 from 106.628, graph 0 to 106.628, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 3 'kill' at 107.128, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 4 from 111.747, graph 0 to 111.747, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 4 'kill' at 112.247, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 5 from 112.461, graph 0 to 112.461, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 5 'kill' at 112.961, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 6 from 120.000, graph 0 to 120.000, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 6 'restart x10' at 120.500, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 7 from 122.759, graph 0 to 122.759, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 7 'kill' at 123.259, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 8 from 150.000, graph 0 to 150.000, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 8 'join x10' at 150.500, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 9 from 188.305, graph 0 to 188.305, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 9 'kill' at 188.805, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 10 from 192.778, graph 0 to 192.778, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 10 'kill' at 193.278, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 11 from 200.000, graph 0 to 200.000, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 11 'stall x3' at 200.500, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 12 from 204.642, graph 0 to 204.642, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 12 'kill' at 205.142, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 13 from 226.199, graph 0 to 226.199, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 13 'kill' at 226.699, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 14 from 228.298, graph 0 to 228.298, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 14 'kill' at 228.798, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 15 from 264.682, graph 0 to 264.682, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 15 'kill' at 265.182, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set arrow 16 from 292.663, graph 0 to 292.663, graph 1 nohead dashtype 2 lc rgb '#909090'
set label 16 'kill' at 293.163, graph 0.99 rotate by 90 right font ',8' tc rgb '#606060'
set output 'membership.png'
set title 'Membership: live members seen by each running node'
set ylabel 'members'
set yrange [0:*]
plot 'timeseries.csv' using 1:2 skip 1 with lines lw 3 lc rgb '#000000' title 'running nodes', \
     '' using 1:3 skip 1 with lines lw 2 title 'seen (mean)', \
     '' using 1:4 skip 1 with lines title 'seen (min)', \
     '' using 1:5 skip 1 with lines title 'seen (max)'

set output 'failures.png'
set title 'Failure detector events per second'
set ylabel 'events / s'
set yrange [0:*]
plot 'timeseries.csv' using 1:7 skip 1 with impulses lw 2 title 'suspicions', \
     '' using 1:($10 > 0 ? $10 : NaN) skip 1 with points pt 7 ps 1.5 title 'failures detected', \
     '' using 1:($9 > 0 ? $9 : NaN) skip 1 with points pt 6 ps 1.5 title 'false deaths'

set output 'hit_ratio.png'
set title 'Reads served by a cache, per second'
set ylabel 'hits / reads'
set yrange [0:1.25]
set ytics 0, 0.2, 1
plot 'timeseries.csv' using 1:13 skip 1 with lines lw 2 lc rgb '#e69f00' title 'independent caches', \
     '' using 1:12 skip 1 with lines lw 3 lc rgb '#0072b2' title 'Shoal'
set ytics autofreq

set output 's3_requests.png'
set title 'S3 GET requests per second (linear: zero is zero)'
set ylabel 'GETs / s'
set yrange [0:*]
plot 'timeseries.csv' using 1:16 skip 1 with lines lw 2 lc rgb '#999999' title 'no cache', \
     '' using 1:15 skip 1 with lines lw 2 lc rgb '#e69f00' title 'independent caches', \
     '' using 1:14 skip 1 with lines lw 3 lc rgb '#0072b2' title 'Shoal'

set output 'cost.png'
set title 'Cumulative cost: S3 requests + egress + cross-zone traffic + PUTs'
set ylabel 'USD since the start'
set yrange [0:*]
set key inside left top
plot 'timeseries.csv' using 1:24 skip 1 with lines lw 2 lc rgb '#999999' title 'no cache', \
     '' using 1:23 skip 1 with lines lw 2 lc rgb '#e69f00' title 'independent caches', \
     '' using 1:22 skip 1 with lines lw 3 lc rgb '#0072b2' title 'Shoal'
set key outside right top

set output 'churn_moves.png'
set title 'Data whose owner changed (churn)'
set ylabel 'MiB / s'
set yrange [0:*]
set y2label 'running nodes'
set y2range [0:*]
set y2tics
plot 'timeseries.csv' using 1:($21 / 1048576) skip 1 with impulses lw 2 title 'bytes moved', \
     '' using 1:2 skip 1 axes x1y2 with lines title 'running nodes (right)'
unset y2tics
unset y2label

