# cpuu-fleet: download
<#
.SYNOPSIS
    Streams files back to the engine: a header per file, then base64 chunks, one output object each.
.DESCRIPTION
    For each path: @{Path; Length; Sha256}, then the content as base64 strings of at most
    -ChunkSize raw bytes (none for an empty file). Only one chunk is in memory at a time, so large
    files cost no more memory than small ones. Every path is checked before anything is sent.
    Terminating error: FileNotFound (ObjectNotFound). Read-only.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string[]]$Paths,

    [ValidateRange(1, 16777216)]
    [int]$ChunkSize = 262144
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Open-Shared {
    # ReadWrite sharing: a CPUU log may still be open for writing.
    param([Parameter(Mandatory = $true)][string]$Path)
    return [System.IO.File]::Open($Path, [System.IO.FileMode]::Open,
        [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
}

foreach ($path in $Paths) {
    if (-not (Test-Path -LiteralPath $path -PathType Leaf)) {
        $exception = New-Object -TypeName System.IO.FileNotFoundException -ArgumentList @(
            "Cannot find path '$path' because it does not exist.", $path)
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ArgumentList @(
            $exception, 'FileNotFound', [System.Management.Automation.ErrorCategory]::ObjectNotFound, $path)
        $PSCmdlet.ThrowTerminatingError($record)
    }
}

$buffer = New-Object -TypeName byte[] -ArgumentList $ChunkSize
foreach ($path in $Paths) {
    $stream = Open-Shared -Path $path
    try {
        # First pass: hash exactly the bytes that will be sent (the file may still grow).
        $length = $stream.Length
        $sha256 = [System.Security.Cryptography.SHA256]::Create()
        try {
            $remaining = $length
            while ($remaining -gt 0) {
                $read = $stream.Read($buffer, 0, [int][Math]::Min([int64]$buffer.Length, $remaining))
                if ($read -le 0) {
                    break
                }
                $null = $sha256.TransformBlock($buffer, 0, $read, $null, 0)
                $remaining -= $read
            }
            $null = $sha256.TransformFinalBlock($buffer, 0, 0)
            $hex = ([System.BitConverter]::ToString($sha256.Hash) -replace '-', '').ToLowerInvariant()
        }
        finally {
            $sha256.Dispose()
        }

        @{
            Path   = $path
            Length = [int64]$length
            Sha256 = $hex
        }

        # Second pass: one base64 string per chunk.
        $null = $stream.Seek(0, [System.IO.SeekOrigin]::Begin)
        $remaining = $length
        while ($remaining -gt 0) {
            $read = $stream.Read($buffer, 0, [int][Math]::Min([int64]$buffer.Length, $remaining))
            if ($read -le 0) {
                break
            }
            [System.Convert]::ToBase64String($buffer, 0, $read)
            $remaining -= $read
        }
    }
    finally {
        $stream.Dispose()
    }
}
