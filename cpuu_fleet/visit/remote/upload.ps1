# cpuu-fleet: upload
<#
.SYNOPSIS
    Writes files sent as pipeline input into a staging folder, checking each one's SHA-256.
.DESCRIPTION
    Input, for each file: a header hashtable @{Path; Length; Sha256; Private} (Path relative to
    -Directory; Private $true: only SYSTEM and Administrators may read it, e.g. the INI with its
    secrets), then the file's content as base64 strings, any number of them (none for an empty
    file). -Root (the staging root) is created with a protected ACL: SYSTEM and Administrators
    full control, Users read and execute, inheritance removed. An existing -Root or -Directory
    that SYSTEM, Administrators or this account do not own is refused (UntrustedStaging,
    SecurityError): a local user created it, perhaps to plant files beside CPUU. Content is
    streamed to "<target>.partial", checked (length and SHA-256), then moved over the target, so
    a half-written or corrupted file never takes the place of a good one.
    Terminating errors: HashMismatch (InvalidData), DiskFull (WriteError), InvalidPath
    (InvalidArgument) for a relative path that leaves -Directory, InvalidHeader (InvalidData) for
    a Length that is not a whole number or a Sha256 that is not 64 hex digits, FileInUse
    (ResourceBusy) when the target stays held by another process, UntrustedStaging
    (SecurityError). On any error the current file's .partial is removed.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string]$Directory,

    [string]$Root,

    [Parameter(ValueFromPipeline = $true)]
    [object]$InputObject
)

begin {
    Set-StrictMode -Version 2.0
    $ErrorActionPreference = 'Stop'

    # The upload's state, shared by the functions below and the process/end blocks. Not $script:
    # variables: a script added with UseLocalScope runs in a new scope that is NOT a script scope
    # (PowerShell's CommandProcessor: NewScope(fromScriptFile), false for AddScript text), so
    # $script: would name the runspace's global scope. The functions read $state through
    # PowerShell's dynamic scoping and change its entries, never the variable itself.
    $state = @{
        Root            = $null
        Current         = $null
        ReplaceAttempts = 5
        ReplaceDelayMs  = 500
    }

    function Stop-Upload {
        param(
            [Parameter(Mandatory = $true)][string]$Message,
            [Parameter(Mandatory = $true)][string]$ErrorId,
            [Parameter(Mandatory = $true)][System.Management.Automation.ErrorCategory]$Category,
            [object]$Target
        )
        $exception = New-Object -TypeName System.InvalidOperationException -ErrorAction Stop -ArgumentList $Message
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ErrorAction Stop -ArgumentList @(
            $exception, $ErrorId, $Category, $Target)
        $PSCmdlet.ThrowTerminatingError($record)
    }

    function Test-DiskFull {
        # ERROR_DISK_FULL (0x70) and ERROR_HANDLE_DISK_FULL (0x27) arrive as IOException HResults.
        param([System.Exception]$Exception)
        while ($null -ne $Exception) {
            if ($Exception -is [System.IO.IOException]) {
                $code = $Exception.HResult -band 0xFFFF
                if ($code -eq 0x70 -or $code -eq 0x27) {
                    return $true
                }
            }
            $Exception = $Exception.InnerException
        }
        return $false
    }

    function Test-InUse {
        # The target is held by another process: ERROR_SHARING_VIOLATION (32), ERROR_LOCK_VIOLATION
        # (33), ReplaceFile's ERROR_UNABLE_TO_REMOVE_REPLACED (1175) and ERROR_UNABLE_TO_MOVE_REPLACEMENT
        # (1176, 1177), or access denied (UnauthorizedAccessException), which is what replacing a
        # running program's image gives. Assumption (Microsoft does not list ReplaceFile's errors per
        # cause): access denied is taken for "in use" too; retrying it costs a few seconds at most.
        param([System.Exception]$Exception)
        while ($null -ne $Exception) {
            if ($Exception -is [System.UnauthorizedAccessException]) {
                return $true
            }
            if ($Exception -is [System.IO.IOException]) {
                $code = $Exception.HResult -band 0xFFFF
                if ($code -eq 32 -or $code -eq 33 -or ($code -ge 1175 -and $code -le 1177)) {
                    return $true
                }
            }
            $Exception = $Exception.InnerException
        }
        return $false
    }

    function Move-IntoPlace {
        # Replace keeps the target's identity (ACLs) and swaps in one step; Move for a new file.
        # A target another process holds (an AV scan, CPUU running from this folder) is retried a
        # few times, then reported as FileInUse: the .partial is removed by the caller.
        param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$File)
        $attempt = 1
        while ($true) {
            try {
                if ([System.IO.File]::Exists($File.Target)) {
                    [System.IO.File]::Replace($File.Partial, $File.Target, [NullString]::Value)
                }
                else {
                    [System.IO.File]::Move($File.Partial, $File.Target)
                }
                return
            }
            catch {
                if (-not (Test-InUse -Exception $_.Exception)) {
                    throw
                }
                if ($attempt -ge $state.ReplaceAttempts) {
                    Stop-Upload -Message ("'{0}' is in use by another process: it could not be replaced after {1} attempts." -f `
                            $File.Relative, $attempt) -ErrorId 'FileInUse' -Category ResourceBusy -Target $File.Relative
                }
            }
            $attempt += 1
            Start-Sleep -Milliseconds $state.ReplaceDelayMs -ErrorAction Stop
        }
    }

    function New-ProtectedSecurity {
        # A security descriptor built from nothing, inheritance removed: SYSTEM and Administrators
        # full control, and BUILTIN\Users read and execute when -UsersRead (the staging root: CPUU
        # runs as a standard user). SIDs, not names: names are localized. A new object carries no
        # owner, so Set-Acl writes the DACL only and the owner stays whoever created the entry.
        param([switch]$Container, [switch]$UsersRead)
        $inherit = [System.Security.AccessControl.InheritanceFlags]::None
        $security = New-Object -TypeName System.Security.AccessControl.FileSecurity -ErrorAction Stop
        if ($Container) {
            $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
            $security = New-Object -TypeName System.Security.AccessControl.DirectorySecurity -ErrorAction Stop
        }
        $security.SetAccessRuleProtection($true, $false)
        $grants = @(@('S-1-5-18', 'FullControl'), @('S-1-5-32-544', 'FullControl'))
        if ($UsersRead) {
            $grants += , @('S-1-5-32-545', 'ReadAndExecute')
        }
        foreach ($grant in $grants) {
            $identity = New-Object -TypeName System.Security.Principal.SecurityIdentifier -ErrorAction Stop -ArgumentList $grant[0]
            $rule = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ErrorAction Stop -ArgumentList @(
                $identity, ([System.Security.AccessControl.FileSystemRights]($grant[1])), $inherit,
                [System.Security.AccessControl.PropagationFlags]::None, [System.Security.AccessControl.AccessControlType]::Allow)
            $security.AddAccessRule($rule)
        }
        $security
    }

    function Assert-TrustedFolder {
        # A folder that exists already must be owned by SYSTEM, Administrators or this account
        # (an elevated admin's objects are owned by Administrators, or by the admin when the
        # "Default owner for objects created by members of the Administrators group" policy says
        # so). Anyone else created it first and may have planted files in it.
        param([Parameter(Mandatory = $true)][string]$Path)
        if (-not (Test-Path -LiteralPath $Path -PathType Container)) {
            return
        }
        $owner = (Get-Acl -LiteralPath $Path -ErrorAction Stop).GetOwner([System.Security.Principal.SecurityIdentifier])
        $self = [System.Security.Principal.WindowsIdentity]::GetCurrent().User
        $trusted = @('S-1-5-18', 'S-1-5-32-544', $self.Value)
        if ($null -eq $owner -or $trusted -notcontains $owner.Value) {
            Stop-Upload -Message ("The staging folder '{0}' is owned by {1}, not by SYSTEM or Administrators: another account created it and may have placed files in it. Nothing is written to or run from it." -f `
                    $Path, $owner) -ErrorId 'UntrustedStaging' -Category SecurityError -Target $Path
        }
    }

    function Protect-Root {
        # Created with its ACL in one step (no moment with ProgramData's inherited one); an
        # existing root (an older cpuu-fleet's, trusted by its owner) is protected now.
        param([Parameter(Mandatory = $true)][string]$Path)
        $security = New-ProtectedSecurity -Container -UsersRead
        if (-not (Test-Path -LiteralPath $Path -PathType Container)) {
            $null = [System.IO.Directory]::CreateDirectory($Path, $security)
            return
        }
        if (-not (Get-Acl -LiteralPath $Path -ErrorAction Stop).AreAccessRulesProtected) {
            Set-Acl -LiteralPath $Path -AclObject $security -ErrorAction Stop
        }
    }

    function Remove-Partial {
        if ($null -ne $state.Current) {
            $state.Current.Stream.Dispose()
            $state.Current.Hasher.Dispose()
            if (Test-Path -LiteralPath $state.Current.Partial -PathType Leaf) {
                Remove-Item -LiteralPath $state.Current.Partial -Force -ErrorAction Stop
            }
            $state.Current = $null
        }
    }

    function Open-Target {
        param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Header)
        $relative = [string]$Header['Path']
        $target = $null
        try {
            if ([string]::IsNullOrWhiteSpace($relative) -or [System.IO.Path]::IsPathRooted($relative)) {
                throw 'not a relative path'
            }
            $target = [System.IO.Path]::GetFullPath([System.IO.Path]::Combine($state.Root, $relative))
        }
        catch {
            $target = $null
        }
        if ($null -eq $target -or -not $target.StartsWith($state.Root, [System.StringComparison]::OrdinalIgnoreCase)) {
            Stop-Upload -Message "Invalid path '$relative': it must stay inside $Directory." `
                -ErrorId 'InvalidPath' -Category InvalidArgument -Target $relative
        }
        # The engine sends Length as a string (pypsrp 0.9.1 would tag a Python int as a 32-bit
        # <I32>, which Windows cannot deserialize for 2 GiB or more). A cast would read a missing
        # Length as 0 and fail on text with an id nobody knows: parse it, and say InvalidHeader.
        $length = [int64]0
        $lengthText = [string]$Header['Length']
        if (-not [int64]::TryParse($lengthText, [System.Globalization.NumberStyles]::None,
                [System.Globalization.CultureInfo]::InvariantCulture, [ref]$length)) {
            Stop-Upload -Message "Invalid header for '$relative': Length is missing or not a number." `
                -ErrorId 'InvalidHeader' -Category InvalidData -Target $relative
        }
        $expected = [string]$Header['Sha256']
        if ($expected -notmatch '^[0-9A-Fa-f]{64}$') {
            Stop-Upload -Message "Invalid header for '$relative': Sha256 is missing or not 64 hex digits." `
                -ErrorId 'InvalidHeader' -Category InvalidData -Target $relative
        }
        $drive = New-Object -TypeName System.IO.DriveInfo -ErrorAction Stop -ArgumentList ([System.IO.Path]::GetPathRoot($target))
        if ($length -gt $drive.AvailableFreeSpace) {
            Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                -Category WriteError -Target $relative
        }
        $null = [System.IO.Directory]::CreateDirectory([System.IO.Path]::GetDirectoryName($target))
        $partial = $target + '.partial'
        $private = $Header['Private'] -eq $true
        if ($private) {
            # Created with the private ACL: not even the .partial is readable by Users.
            $stream = [System.IO.File]::Create($partial, 65536, [System.IO.FileOptions]::None,
                (New-ProtectedSecurity))
        }
        else {
            $stream = [System.IO.File]::Open($partial, [System.IO.FileMode]::Create,
                [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
        }
        $state.Current = @{
            Private  = $private
            Relative = $relative
            Target   = $target
            Partial  = $partial
            Length   = $length
            Sha256   = $expected.ToLowerInvariant()
            Stream   = $stream
            Hasher   = [System.Security.Cryptography.SHA256]::Create()
            Written  = [int64]0
        }
    }

    function Write-Chunk {
        param([Parameter(Mandatory = $true)][AllowEmptyString()][string]$Text)
        if ($null -eq $state.Current) {
            Stop-Upload -Message 'File content arrived before its header.' -ErrorId 'UnexpectedInput' `
                -Category InvalidData -Target $null
        }
        $bytes = [System.Convert]::FromBase64String($Text)
        try {
            $state.Current.Stream.Write($bytes, 0, $bytes.Length)
        }
        catch {
            $relative = $state.Current.Relative
            if (Test-DiskFull -Exception $_.Exception) {
                Remove-Partial
                Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                    -Category WriteError -Target $relative
            }
            Remove-Partial
            throw
        }
        $null = $state.Current.Hasher.TransformBlock($bytes, 0, $bytes.Length, $null, 0)
        $state.Current.Written += $bytes.Length
    }

    function Complete-Target {
        $file = $state.Current
        try {
            $file.Stream.Flush()
        }
        catch {
            if (Test-DiskFull -Exception $_.Exception) {
                Remove-Partial
                Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                    -Category WriteError -Target $file.Relative
            }
            throw
        }
        $file.Stream.Dispose()
        $null = $file.Hasher.TransformFinalBlock((New-Object -TypeName byte[] -ErrorAction Stop -ArgumentList 0), 0, 0)
        $actual = ([System.BitConverter]::ToString($file.Hasher.Hash) -replace '-', '').ToLowerInvariant()
        $file.Hasher.Dispose()
        if ($file.Written -ne $file.Length -or $actual -ne $file.Sha256) {
            Remove-Item -LiteralPath $file.Partial -Force -ErrorAction Stop
            $state.Current = $null
            Stop-Upload -Message ("Hash mismatch for '{0}': received {1} bytes with SHA-256 {2}, expected {3} bytes with {4}." -f `
                    $file.Relative, $file.Written, $actual, $file.Length, $file.Sha256) `
                -ErrorId 'HashMismatch' -Category InvalidData -Target $file.Relative
        }
        Move-IntoPlace -File $file
        if ($file.Private) {
            # File.Replace keeps the replaced file's DACL (ReplaceFile): set the private one again.
            Set-Acl -LiteralPath $file.Target -AclObject (New-ProtectedSecurity) -ErrorAction Stop
        }
        $state.Current = $null
        @{
            Path   = $file.Relative
            Length = $file.Written
            Sha256 = $actual
        }
    }

    if (-not [string]::IsNullOrEmpty($Root)) {
        Assert-TrustedFolder -Path $Root
    }
    Assert-TrustedFolder -Path $Directory
    if (-not [string]::IsNullOrEmpty($Root)) {
        Protect-Root -Path $Root
    }
    $null = [System.IO.Directory]::CreateDirectory($Directory)
    $state.Root = [System.IO.Path]::GetFullPath($Directory).TrimEnd('\') + '\'
}

process {
    if ($null -eq $InputObject) {
        return
    }
    try {
        if ($InputObject -is [System.Collections.IDictionary]) {
            if ($null -ne $state.Current) {
                Complete-Target
            }
            Open-Target -Header $InputObject
        }
        else {
            Write-Chunk -Text ([string]$InputObject)
        }
    }
    catch {
        Remove-Partial
        throw
    }
}

end {
    try {
        if ($null -ne $state.Current) {
            Complete-Target
        }
    }
    catch {
        # The last file fails here, not in process{}: its .partial must not stay either.
        Remove-Partial
        throw
    }
}
