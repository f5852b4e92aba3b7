// A plain Verilog testbench of the generated core (native host bus): no cocotb, no Python
// at simulation time. It runs a command file written from the design's manifest and the
// fixed-point model (eqprop.sim.plain.write_stimulus) and compares every read with the
// model's value. Works for any design: compile with -DTOP=<the manifest's name>.
//
//   iverilog -g2005 -DTOP=NAME -o tb.vvp sim/plain/tb_infer.v DESIGN/NAME.v && vvp tb.vvp +stim=stim.txt
//   (Verilator:) verilator --binary -DTOP=NAME --top-module tb_infer sim/plain/tb_infer.v DESIGN/NAME.v
//
// Command file: one command a line, three hex fields "op addr data":
//   0 ADDR DATA   write DATA at word address ADDR (host bus, one cycle of we)
//   1 ADDR EXP    read ADDR (one cycle of re, data with rvalid four cycles later) and compare with EXP
//   2 0 LIMIT     poll status until done and not busy (bit 1 set, bit 0 clear), at most LIMIT reads
//   3 0 0         end
// The last line printed is "PASS: N reads equal" or "FAIL: K of N reads differ".
`timescale 1ns/1ps
`ifndef TOP
`define TOP eqprop_core
`endif
module tb_infer;
  reg clk = 1'b0;
  reg rst = 1'b1;  // active high, synchronous
  reg [23:0] addr = 24'd0;
  reg [31:0] wdata = 32'd0;
  reg we = 1'b0;
  reg re = 1'b0;
  wire [31:0] rdata;
  wire rvalid;
  wire busy, irq;

  `TOP dut (.clk(clk), .rst(rst), .bus__addr(addr), .bus__wdata(wdata), .bus__we(we), .bus__re(re),
            .bus__rdata(rdata), .bus__rvalid(rvalid), .busy(busy), .irq(irq));

  always #5 clk = ~clk;

  integer fd, n, op, reads, bad, polls, line;
  reg [31:0] a, d, got;
  reg [8*256-1:0] stim;

  task bus_write(input [23:0] wa, input [31:0] wd);
    begin
      @(negedge clk); addr = wa; wdata = wd; we = 1'b1;
      @(negedge clk); we = 1'b0;
    end
  endtask

  integer waited;
  task bus_read(input [23:0] ra, output [31:0] rd);
    begin
      @(negedge clk); addr = ra; re = 1'b1;
      @(negedge clk); re = 1'b0;
      waited = 1;
      while (rvalid !== 1'b1 && waited < 8) begin  // the core's READ_LATENCY is 4
        @(negedge clk); waited = waited + 1;
      end
      if (rvalid !== 1'b1) begin
        $display("line %0d: read %h: no rvalid", line, ra);
        bad = bad + 1;
      end
      rd = rdata;
    end
  endtask

  initial begin
    if (!$value$plusargs("stim=%s", stim)) stim = "stim.txt";
    fd = $fopen(stim, "r");
    if (fd == 0) begin
      $display("FAIL: cannot open %0s", stim);
      $finish;
    end
    reads = 0; bad = 0; line = 0;
    repeat (4) @(posedge clk);
    @(negedge clk); rst = 1'b0;
    op = 0;
    while (op != 3) begin
      n = $fscanf(fd, "%h %h %h\n", op, a, d);
      line = line + 1;
      if (n != 3) begin
        $display("FAIL: %0s line %0d: not three hex fields", stim, line);
        op = 3; bad = bad + 1;
      end else if (op == 0) begin
        bus_write(a[23:0], d);
      end else if (op == 1) begin
        bus_read(a[23:0], got);
        reads = reads + 1;
        if (got !== d) begin
          if (bad < 20) $display("line %0d: read %h: expected %h, got %h", line, a[23:0], d, got);
          bad = bad + 1;
        end
      end else if (op == 2) begin
        polls = 0;
        got = 32'd0;
        while (got[1:0] !== 2'b10 && polls < d) begin
          bus_read(a[23:0], got);
          polls = polls + 1;
        end
        if (got[1:0] !== 2'b10) begin
          $display("line %0d: not done after %0d polls (status %h)", line, polls, got);
          bad = bad + 1;
        end
      end
    end
    $fclose(fd);
    if (bad == 0) $display("PASS: %0d reads equal", reads);
    else $display("FAIL: %0d of %0d reads differ", bad, reads);
    $finish;
  end
endmodule
